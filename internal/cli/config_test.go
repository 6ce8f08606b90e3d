package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/configs"
	"github.com/blackbox-market/blackbox/internal/node"
	"go.yaml.in/yaml/v3"
)

// run executes the CLI in-process and returns exit code, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func flatten(prefix string, v any, out map[string]any) {
	if m, ok := v.(map[string]any); ok {
		for k, x := range m {
			flatten(prefix+k+".", x, out)
		}
		return
	}
	out[strings.TrimSuffix(prefix, ".")] = v
}

// TestSampleConfigIsTheDefaults keeps configs/blackbox.yaml honest: it has
// every key of the typed config, no other key, and each at its default.
func TestSampleConfigIsTheDefaults(t *testing.T) {
	var sample map[string]any
	if err := yaml.Unmarshal(configs.Sample, &sample); err != nil {
		t.Fatal(err)
	}
	got := map[string]any{}
	flatten("", sample, got)
	want := map[string]any{}
	node.EachKey(node.DefaultConfig(), func(k string, v any) { want[k] = v })
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("configs/blackbox.yaml lacks key %s", k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("configs/blackbox.yaml has key %s that the config does not know", k)
		}
	}
	// Loading the sample as a config file gives exactly the defaults.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "blackbox.yaml"), configs.Sample, 0o600); err != nil {
		t.Fatal(err)
	}
	a := &App{v: newViper(), dataDir: dir}
	if err := a.loadConfig(nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := a.NodeConfig()
	if err != nil {
		t.Fatal(err)
	}
	def := node.DefaultConfig()
	def.DataDir = dir
	def.ConfigFile = filepath.Join(dir, "blackbox.yaml")
	def.Sandbox.StateDir = filepath.Join(dir, "sandbox")
	if !reflect.DeepEqual(cfg, def) {
		t.Errorf("sample config differs from defaults:\n got %+v\nwant %+v", cfg, def)
	}
	// Every key is also documented by a comment line above it.
	lines := strings.Split(string(configs.Sample), "\n")
	for i, l := range lines {
		trim := strings.TrimSpace(l)
		if trim == "" || strings.HasPrefix(trim, "#") || strings.HasPrefix(trim, "- ") || i == 0 {
			continue
		}
		prev := strings.TrimSpace(lines[i-1])
		if !strings.HasPrefix(prev, "#") && !strings.HasSuffix(prev, ":") && !isSiblingOfDocumented(lines, i) {
			t.Errorf("line %d %q has no comment", i+1, l)
		}
	}
}

// isSiblingOfDocumented accepts a key in a block of keys introduced by one
// comment (e.g. reserve.cpu, reserve.memory, reserve.disk).
func isSiblingOfDocumented(lines []string, i int) bool {
	indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
	for j := i - 1; j >= 0; j-- {
		l := lines[j]
		ind := len(l) - len(strings.TrimLeft(l, " "))
		t := strings.TrimSpace(l)
		if t == "" {
			return false
		}
		if strings.HasPrefix(t, "#") {
			return true
		}
		if ind < indent {
			return true // first key of a block whose parent key is documented
		}
	}
	return false
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		file, env, want string
	}{
		{env: "BLACKBOX_CONTRACT_SERVICE_RENEW_LEAD=30s", want: ""}, // first: env stays set
		{file: "meter:\n  reserve:\n    memory: lots\n", want: "meter.reserve.memory"},
		{file: "offer:\n  ttl: 5h\n", want: "offer.ttl"},
		{file: "listen: [\"not-a-multiaddr\"]\n", want: "listen"},
		{file: "bootstrap: [\"/ip4/1.2.3.4/tcp/1\"]\n", want: "bootstrap"},
		{file: "lisen: []\n", want: "unknown keys lisen"},
		{file: "log_level: loud\n", want: "log_level"},
		{env: "BLACKBOX_META_X=1", want: ""},
		{env: "BLACKBOX_METER_RESERVE_CPU=-3", want: "meter.reserve.cpu"},
		{env: "BLACKBOX_CONN_LOW=0", want: "conn_low"},
		{file: "contract:\n  service:\n    max_restarts: 0\n", want: "contract.service.max_restarts"},
		{env: "BLACKBOX_CONTRACT_SERVICE_DRAIN=1h", want: "contract.service.drain"}, // last: env stays set
	}
	for _, c := range cases {
		dir := t.TempDir()
		if c.file != "" {
			if err := os.WriteFile(filepath.Join(dir, "blackbox.yaml"), []byte(c.file), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if c.env != "" {
			k, v, _ := strings.Cut(c.env, "=")
			t.Setenv(k, v)
		}
		code, _, stderr := run(t, "config", "show", "--data-dir", dir)
		if c.want == "" {
			if code != 0 {
				t.Errorf("%q: failed: %s", c.env, stderr)
			}
			continue
		}
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("file %q env %q: exit %d, stderr %q; want an error naming %q", c.file, c.env, code, stderr, c.want)
		}
	}
}

// TestOldSampleConfigStillLoads: every data dir keeps the sample config of
// the version that created it (testdata holds the one before the ranking
// policy moved to pkg/reputation); an upgraded node must start on it, and
// say which of its keys are retired.
func TestOldSampleConfigStillLoads(t *testing.T) {
	old, err := os.ReadFile(filepath.Join("testdata", "blackbox-issue6.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "blackbox.yaml"), old, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "config", "show", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("config show on the old sample config: exit %d: %s", code, stderr)
	}
	for _, k := range []string{"contract.explore (removed: reputation.exploration decides)", "reputation.spot_check_rate"} {
		if !strings.Contains(stderr, k) {
			t.Errorf("no warning naming %s: %q", k, stderr)
		}
	}
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "blackbox.yaml"), []byte("region: file\nconn_high: 300\nmeter:\n  hours: \"22:00-07:00\"\n"), 0o600)
	t.Setenv("BLACKBOX_REGION", "env")
	t.Setenv("BLACKBOX_METER_DAYS", "mon-fri")
	t.Setenv("BLACKBOX_PAYMENT_RPC_PASS", "hunter2")
	code, out, stderr := run(t, "config", "show", "--data-dir", dir)
	if code != 0 {
		t.Fatal(stderr)
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("config show prints the RPC password:\n%s", out)
	}
	for _, want := range []string{"# from: no daemon is running", "region: env", "conn_high: 300", "hours: 22:00-07:00", "days: mon-fri", "cpu_basis: idle", "rpc_pass: (set)"} {
		if !strings.Contains(out, want) {
			t.Errorf("config show lacks %q:\n%s", want, out)
		}
	}
}

// TestPaymentBackendDefault: a new node gets the light client on mainnet;
// btcd's RPC credentials in the environment (or in a config file from
// before payment.backend) keep btcd; BLACKBOX_PAYMENT_BACKEND decides over
// both.
func TestPaymentBackendDefault(t *testing.T) {
	show := func(dir string) string {
		t.Helper()
		code, out, stderr := run(t, "config", "show", "--data-dir", dir)
		if code != 0 {
			t.Fatal(stderr)
		}
		return out
	}
	if out := show(t.TempDir()); !strings.Contains(out, "backend: neutrino") || !strings.Contains(out, "network: mainnet") {
		t.Errorf("a new node's payment config:\n%s", out)
	}
	old := t.TempDir()
	os.WriteFile(filepath.Join(old, "blackbox.yaml"), []byte("payment:\n  network: regtest\n  rpc_user: u\n  rpc_pass: p\n"), 0o600)
	if out := show(old); !strings.Contains(out, "backend: btcd") {
		t.Errorf("a config from before payment.backend naming btcd's RPC:\n%s", out)
	}
	t.Setenv("BLACKBOX_PAYMENT_RPC_USER", "u")
	if out := show(t.TempDir()); !strings.Contains(out, "backend: btcd") {
		t.Errorf("RPC credentials in the environment:\n%s", out)
	}
	t.Setenv("BLACKBOX_PAYMENT_BACKEND", "neutrino")
	if out := show(t.TempDir()); !strings.Contains(out, "backend: neutrino") {
		t.Errorf("BLACKBOX_PAYMENT_BACKEND=neutrino beside RPC credentials:\n%s", out)
	}
}
