// Package cli holds blackbox's cobra commands. It is the only place that reads
// flags, environment and the config file (through viper); everything below it
// receives typed, validated configuration.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// Version is set at build time with -ldflags.
var Version = "dev"

// ExitError carries a process exit code out of a command (for example the
// exit code of a sandboxed job) without printing anything more.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Exit codes: a job's own code passes through; these are blackbox's.
const (
	ExitError1   = 1   // something failed; the message says what
	ExitUsage    = 2   // a bad flag, argument or command
	ExitNotRun   = 125 // the job did not run to its end (failed, cancelled; docker's code)
	ExitDetached = 130 // ctrl-c: the job goes on
)

// UsageError is a mistake in how a command was called: an unknown command
// or flag, a missing or extra argument, a value that does not parse. The
// process exits with ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// usagef is a UsageError with a formatted message.
func usagef(format string, args ...any) error {
	return &UsageError{fmt.Errorf(format, args...)}
}

// isUsage reports whether err is a mistake in the command line, including
// the ones cobra makes itself (unknown command, arguments, required flags).
func isUsage(err error) bool {
	var ue *UsageError
	if errors.As(err, &ue) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"unknown command ", "required flag(s) ", "accepts ", "requires at least ", "requires at most ", "unknown flag: ", "unknown shorthand flag: ", "invalid argument "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// App is what every command gets: its output streams, the global flags and
// the configuration source.
type App struct {
	Stdout io.Writer
	Stderr io.Writer

	dataDir    string
	configFile string
	logLevel   string
	v          *viper.Viper
	root       *cobra.Command
}

// Run executes blackbox with args and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &App{Stdout: stdout, Stderr: stderr, v: newViper()}
	root := a.newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{err} })
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	fmt.Fprintln(stderr, "blackbox:", err)
	code := exitCode(err)
	if code == ExitUsage {
		fmt.Fprintf(stderr, "see `%s --help`\n", cmd.CommandPath())
	}
	return code
}

// exitCode is the process exit code for what a command returned.
func exitCode(err error) int {
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case isUsage(err):
		return ExitUsage
	}
	return ExitError1
}

func (a *App) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "blackbox",
		Short:         "Sell spare compute for Bitcoin, or buy it from anyone",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.loadConfig(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.dataDir, "data-dir", "", dataDirHelp)
	pf.StringVar(&a.configFile, "config", "", "config file (default DATA_DIR/blackbox.yaml)")
	pf.StringVar(&a.logLevel, "log-level", "", "log level: debug, info, warn, error (config key log_level)")
	a.root = root
	root.AddCommand(commands(a)...)
	applyExamples(root)
	return root
}

// DefaultDataDir is the per-user data directory: $XDG_DATA_HOME/blackbox or
// ~/.local/share/blackbox. The system service uses /var/lib/blackbox.
func DefaultDataDir() string {
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "blackbox")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "blackbox")
	}
	return "/var/lib/blackbox"
}

func newViper() *viper.Viper {
	v := viper.New()
	v.SetEnvPrefix("BLACKBOX")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	return v
}

// loadConfig layers flags > env (BLACKBOX_…) > config file > defaults.
func (a *App) loadConfig(cmd *cobra.Command) error {
	v := a.v
	if a.dataDir == "" {
		a.dataDir = findDataDir(cmd)
	}
	a.dataDir, _ = filepath.Abs(a.dataDir)
	file := a.configFile
	explicit := file != ""
	if !explicit {
		file = filepath.Join(a.dataDir, "blackbox.yaml")
	}
	v.SetConfigFile(file)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		var notFound viper.ConfigFileNotFoundError
		if explicit || !(errors.As(err, &notFound) || errors.Is(err, os.ErrNotExist)) {
			return fmt.Errorf("read config %s: %w", file, err)
		}
	}
	return nil
}

// DataDir is the resolved data directory.
func (a *App) DataDir() string { return a.dataDir }

// Section fills out with the typed config section named key (for example
// "sandbox"), as NodeConfig resolved it from defaults, file, environment and
// flags, and validates it. out must point to that section's type.
func (a *App) Section(key string, out interface{ Validate() error }) error {
	cfg, err := a.NodeConfig()
	if err != nil {
		return err
	}
	rv := reflect.ValueOf(cfg)
	for i := range rv.NumField() {
		if rv.Type().Field(i).Tag.Get("mapstructure") == key {
			dst := reflect.ValueOf(out).Elem()
			if dst.Type() != rv.Field(i).Type() {
				return fmt.Errorf("config section %s is a %s, not a %s", key, rv.Field(i).Type(), dst.Type())
			}
			dst.Set(rv.Field(i))
			return nil
		}
	}
	return fmt.Errorf("no config section %q", key)
}

// Logger returns a text logger on stderr at the configured level.
func (a *App) Logger() *slog.Logger {
	lvl := slog.LevelInfo
	s := a.logLevel
	if s == "" {
		s = a.v.GetString("log_level")
	}
	_ = lvl.UnmarshalText([]byte(s))
	return slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// commands lists every subcommand. Each area adds its constructor here.
func commands(a *App) []*cobra.Command {
	return []*cobra.Command{
		newServeCmd(a),
		newStatusCmd(a),
		newOfferCmd(a),
		newMarketCmd(a),
		newSubmitCmd(a),
		newJobsCmd(a),
		newJobCmd(a),
		newResultsCmd(a),
		newCancelCmd(a),
		newForwardCmd(a),
		newContractsCmd(a),
		newEarningsCmd(a),
		newConfigCmd(a),
		newWalletCmd(a),
		newChannelsCmd(a),
		newChannelCmd(a),
		newRestoreCmd(a),
		newTrustCmd(a), newReputationCmd(a),
		newSandboxCmd(a), newDoctorCmd(a),
		newImageCmd(a),
		newDisputeCmd(a), newArbitrateCmd(a), newReleaseCmd(a),
		newVersionCmd(a),
	}
}

func newVersionCmd(a *App) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(a.Stdout, "blackbox", Version)
			return nil
		},
	}
}
