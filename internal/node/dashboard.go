package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/dashboard"
	"github.com/blackbox-market/blackbox/pkg/atomicfile"
	"go.yaml.in/yaml/v3"
)

// LogTail is how many log lines the dashboard shows.
const LogTail = 500

var (
	_ dashboard.Source  = (*Node)(nil)
	_ api.ConfigBackend = (*Node)(nil)
)

func (c *Config) dashboard() dashboard.Config {
	return dashboard.Config{Addr: c.DashboardAddr, TLSCert: c.DashboardTLSCert, TLSKey: c.DashboardTLSKey, AllowHTTP: c.DashboardAllowHTTP}
}

// startDashboard serves the web dashboard when dashboard_addr is set. A
// port already taken (a second node on the machine) costs the dashboard,
// not the node: it is logged and the node runs on.
func (n *Node) startDashboard() error {
	cfg := n.cfg.dashboard()
	if cfg.Addr == "" {
		return nil
	}
	token, err := dashboard.LoadOrCreateToken(n.cfg.DataDir)
	if err != nil {
		return err
	}
	srv, err := dashboard.Listen(cfg, dashboard.Handler(n, token, n.logs, n.log))
	if err != nil {
		n.log.Warn("dashboard not served", "err", err)
		return nil
	}
	n.push(srv.Close)
	n.dashboardURL = srv.URL()
	n.log.Info("serving dashboard", "url", srv.URL(), "token_file", filepath.Join(n.cfg.DataDir, dashboard.TokenFile))
	return nil
}

// configFile is where the configuration came from and policy changes go.
func (n *Node) configFile() string {
	if n.cfg.ConfigFile != "" {
		return n.cfg.ConfigFile
	}
	return filepath.Join(n.cfg.DataDir, "blackbox.yaml")
}

// Config implements api.ConfigBackend: the configuration the node runs
// with, including policy changes made since it started.
func (n *Node) Config(ctx context.Context) (api.ConfigView, error) {
	n.cfgMu.Lock()
	cfg := n.cfg
	n.cfgMu.Unlock()
	p := api.PolicyOf(cfg.Meter)
	return api.ConfigView{DataDir: cfg.DataDir, ConfigFile: n.configFile(), Settings: cfg.Settings(), Policy: p,
		Overridden: overridden(p)}, nil
}

// SetPolicy implements api.ConfigBackend: validate, write the config file,
// then apply to the meter and sign a new offer at once. A bad policy or a
// failed write changes nothing.
func (n *Node) SetPolicy(ctx context.Context, p api.Policy) (api.ConfigView, error) {
	n.cfgMu.Lock()
	next := p.Apply(n.cfg.Meter)
	if err := next.Validate(); err != nil {
		n.cfgMu.Unlock()
		return api.ConfigView{}, fmt.Errorf("%w: %w", api.ErrBadRequest, err)
	}
	if err := writeKeys(n.configFile(), p.PolicyKeys()); err != nil {
		n.cfgMu.Unlock()
		return api.ConfigView{}, fmt.Errorf("save the policy to %s: %w", n.configFile(), err)
	}
	if err := n.meter.SetConfig(next); err != nil { // validated above: cannot fail
		n.cfgMu.Unlock()
		return api.ConfigView{}, fmt.Errorf("%w: %w", api.ErrBadRequest, err)
	}
	n.cfg.Meter = next
	n.cfgMu.Unlock()
	// The meter reports the change from its loop too; signing here as well
	// puts the new prices in the very next offer (the same terms are not
	// signed twice).
	spare, _ := n.meter.Spare(time.Now())
	n.meter.OnChange(spare)
	n.log.Info("selling policy changed", "core_hour", p.Pricing.CoreHour, "start_fee", p.Pricing.StartFee,
		"reserve_cpu", p.Reserve.CPU, "hours", p.Hours, "days", p.Days, "file", n.configFile())
	return n.Config(ctx)
}

// overridden lists the policy keys an environment variable sets (viper's
// BLACKBOX_KEY, dots as underscores): they win again at the next start.
func overridden(p api.Policy) []string {
	var out []string
	for k := range p.PolicyKeys() {
		if _, ok := os.LookupEnv("BLACKBOX_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))); ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// EachKey calls fn with every config key (as in the file, e.g.
// "meter.pricing.core_hour") and its value in cfg, durations as text.
func EachKey(cfg Config, fn func(key string, v any)) {
	eachKey(fn, "", reflect.ValueOf(cfg))
}

func eachKey(fn func(string, any), prefix string, rv reflect.Value) {
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rt.Field(i)
		tag := strings.Split(f.Tag.Get("mapstructure"), ",")[0]
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		key := prefix + tag
		fv := rv.Field(i)
		if fv.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
			eachKey(fn, key+".", fv)
			continue
		}
		v := fv.Interface()
		if d, ok := v.(time.Duration); ok {
			v = d.String()
		}
		fn(key, v)
	}
}

// secretKeys are shown as "(set)" by Settings.
var secretKeys = map[string]bool{"payment.rpc_pass": true}

// Settings is every key of c nested as in the config file, with secrets
// replaced by "(set)".
func (c Config) Settings() map[string]any {
	out := map[string]any{}
	EachKey(c, func(key string, v any) {
		if secretKeys[key] && v != "" {
			v = "(set)"
		}
		m := out
		parts := strings.Split(key, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = v
	})
	return out
}

// writeKeys sets dotted keys in the YAML file at path, keeping its other
// keys and its comments, and replaces the file atomically. A missing file
// is created (0600).
func writeKeys(path string, keys map[string]any) error {
	var doc yaml.Node
	mode := fs.FileMode(0o600)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return err
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s is not a YAML mapping of keys", path)
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		var val yaml.Node
		if err := val.Encode(keys[k]); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if err := setKey(root, strings.Split(k, "."), &val); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2) // as the sample config
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return atomicfile.Write(path, out.Bytes(), mode)
}

// setKey puts val at path in the mapping m, adding mappings on the way.
func setKey(m *yaml.Node, path []string, val *yaml.Node) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != path[0] {
			continue
		}
		if len(path) == 1 {
			val.HeadComment, val.LineComment = m.Content[i+1].HeadComment, m.Content[i+1].LineComment
			m.Content[i+1] = val
			return nil
		}
		sub := m.Content[i+1]
		if sub.Kind != yaml.MappingNode {
			if sub.Tag != "!!null" {
				return fmt.Errorf("%s is not a section", path[0])
			}
			*sub = yaml.Node{Kind: yaml.MappingNode, HeadComment: sub.HeadComment}
		}
		return setKey(sub, path[1:], val)
	}
	key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: path[0]}
	if len(path) == 1 {
		m.Content = append(m.Content, key, val)
		return nil
	}
	sub := &yaml.Node{Kind: yaml.MappingNode}
	m.Content = append(m.Content, key, sub)
	return setKey(sub, path[1:], val)
}
