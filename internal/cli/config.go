package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/configs"
	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/quantity"
	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// NodeConfig is the daemon's typed configuration: defaults, then the config
// file, then BLACKBOX_… environment variables, then flags, unmarshalled once
// and validated. Errors name the key.
func (a *App) NodeConfig() (node.Config, error) {
	cfg := node.DefaultConfig()
	// Every key with its default, so that environment variables override
	// keys absent from the file and `config show` prints them all.
	// Durations come as text ("10s"), decoded back by the hook.
	node.EachKey(cfg, a.v.SetDefault)
	err := a.v.Unmarshal(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = false
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
			sizeHook,
		)
	})
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := a.unknownKeys(); err != nil {
		return cfg, err
	}
	// btcd's RPC credentials select btcd unless payment.backend is set
	// beside them: in a config file from before payment.backend, or in
	// the environment (BLACKBOX_PAYMENT_RPC_USER) without
	// BLACKBOX_PAYMENT_BACKEND. New configs get the light client.
	rpcFromEnv := os.Getenv("BLACKBOX_PAYMENT_RPC_USER") != ""
	if os.Getenv("BLACKBOX_PAYMENT_BACKEND") == "" && cfg.Payment.RPCUser != "" && (rpcFromEnv || !a.v.InConfig("payment.backend")) {
		cfg.Payment.Backend = payment.BackendBtcd
	}
	cfg.DataDir = a.dataDir
	cfg.ConfigFile = a.v.ConfigFileUsed()
	if cfg.Sandbox.StateDir == "" {
		cfg.Sandbox.StateDir = filepath.Join(a.dataDir, "sandbox")
	}
	if a.logLevel != "" {
		cfg.LogLevel = a.logLevel
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// retiredKeys are keys earlier versions read, with what to do instead.
var retiredKeys = map[string]string{
	"contract.explore":                "removed: reputation.exploration decides",
	"reputation.spot_check_rate":      "removed: see reputation.spot_check_floor",
	"reputation.spot_check_new_rate":  "removed: see reputation.spot_check_all_below",
	"reputation.spot_check_own_below": "removed: see reputation.spot_check_all_below",
}

// unknownKeys refuses keys in the config file that no subsystem reads: a
// typo should not silently fall back to a default. Retired keys are not
// typos: every data dir keeps the sample config of the version that created
// it, so they are ignored with a warning, and an upgraded node still starts.
func (a *App) unknownKeys() error {
	known := map[string]bool{}
	node.EachKey(node.DefaultConfig(), func(k string, _ any) { known[k] = true })
	var bad, retired []string
	for _, k := range a.v.AllKeys() {
		if known[k] {
			continue
		}
		if r, ok := retiredKeys[k]; ok {
			retired = append(retired, k+" ("+r+")")
			continue
		}
		bad = append(bad, k)
	}
	if len(retired) > 0 {
		slices.Sort(retired)
		fmt.Fprintf(a.Stderr, "blackbox: config %s: ignoring retired keys %s; delete them\n", a.v.ConfigFileUsed(), strings.Join(retired, ", "))
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("config %s: unknown keys %s", a.v.ConfigFileUsed(), strings.Join(bad, ", "))
	}
	return nil
}

// sizeHook lets byte counts be written as sizes ("2GiB") as well as numbers.
func sizeHook(from, to reflect.Type, data any) (any, error) {
	s, ok := data.(string)
	if !ok || from.Kind() != reflect.String || to.Kind() != reflect.Int64 || to == reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	n, err := quantity.ParseSize(s)
	if err != nil {
		return data, nil // let the decoder say what is wrong
	}
	return n, nil
}

// writeDefaultConfig puts the documented sample config into the data dir if
// there is none yet, so an operator finds every key in one place.
func (a *App) writeDefaultConfig() error {
	if a.configFile != "" {
		return nil
	}
	path := filepath.Join(a.dataDir, "blackbox.yaml")
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(a.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := os.WriteFile(path, configs.Sample, 0o600); err != nil {
		return fmt.Errorf("write default config: %w", err)
	}
	return nil
}

func newConfigCmd(a *App) *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	c.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Print the running node's effective configuration (or, with no node running, the file's)",
		Long: `Print the effective configuration: the running daemon's, with the policy
changes made in the dashboard since it started; with no daemon running for
the data dir, what 'blackbox serve' would start with (defaults, file,
environment, flags), and a comment saying so. Secrets (payment.rpc_pass)
are shown as "(set)".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := a.client().Config(cmd.Context())
			source := "the running daemon"
			if errors.Is(err, api.ErrNoDaemon) {
				cfg, cerr := a.NodeConfig()
				if cerr != nil {
					return cerr
				}
				v, err = api.ConfigView{DataDir: a.dataDir, ConfigFile: cfg.ConfigFile, Settings: cfg.Settings()}, nil
				source = "no daemon is running for this data dir: what `blackbox serve` would start with"
			}
			if err != nil {
				return err
			}
			out, err := yaml.Marshal(v.Settings)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "# from: %s\n# data dir: %s\n# config file: %s\n", source, v.DataDir, v.ConfigFile)
			for _, k := range v.Overridden {
				fmt.Fprintf(a.Stdout, "# %s is also set in the environment: it wins again at the next start\n", k)
			}
			_, err = a.Stdout.Write(out)
			return err
		},
	})
	return c
}
