package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/blackbox-market/blackbox/pkg/quantity"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/spf13/cobra"
)

// sandboxConfig reads the "sandbox" config section over the defaults, with
// the state directory under the data directory unless configured.
func (a *App) sandboxConfig() (sandbox.Config, error) {
	cfg := sandbox.DefaultConfig()
	cfg.StateDir = filepath.Join(a.DataDir(), "sandbox")
	if err := a.Section("sandbox", &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// cliLogger is the configured logger, but at warn level unless a level was
// asked for: a one-shot command prints results, not progress.
func (a *App) cliLogger() *slog.Logger {
	if a.logLevel != "" || a.v.GetString("log_level") != "" {
		return a.Logger()
	}
	return slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newSandboxCmd(a *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Run jobs in the sandbox directly (no daemon needed)",
	}
	cmd.AddCommand(newSandboxRunCmd(a))
	return cmd
}

func newSandboxRunCmd(a *App) *cobra.Command {
	var (
		image, digest, memory, disk, outCap, outDir, input, cpus string
		runtime                                                  string
		pids                                                     int64
		timeout                                                  time.Duration
		env                                                      []string
		asJSON                                                   bool
	)
	cmd := &cobra.Command{
		Use:   "run --image FILE|REF [flags] -- CMD...",
		Short: "Run one job in the sandbox and print its output and usage",
		Long: `Run one job exactly as a contract would: import the image tarball (OCI layout or
docker archive; --digest checks its sha256) or pull a reference, run CMD under the
limits with no network, a read-only root, a size-limited /tmp and /out, the
files of --input DIR read-only at /in (copied; only regular files and
directories, at most sandbox.max_image_bytes), no capabilities and the default
seccomp profile, under --runtime (runc, crun or runsc: gVisor), and report
exit code, reason, CPU time, peak memory, OOM kills and wall time. Talks to containerd directly
(config sandbox.address); needs root. Exits with the job's exit code (127 when it
could not start). With --json the job's stdout and stderr go to stderr and
stdout carries only the result record.

` + quantity.SizeHelp,
		Example: `  blackbox sandbox run --image ./job.tar --cpus 0.5 --memory 64MiB --timeout 10s -- sh -c 'echo hi'
  blackbox sandbox run --image ./job.tar --input ./data --out ./result -- sh -c 'sha256sum /in/* > /out/sums'`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if image == "" {
				return errors.New("--image is required (a tarball path or an image reference)")
			}
			lim := sandbox.Limits{WallClock: timeout, Pids: pids}
			var err error
			if lim.CPUMillis, err = quantity.ParseCPU(cpus); err != nil || lim.CPUMillis <= 0 || lim.CPUMillis > 1024_000 {
				return fmt.Errorf("--cpus %q: want a positive number of cores like 1 or 500m", cpus)
			}
			if lim.MemoryBytes, err = quantity.ParseSize(memory); err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			if disk != "" {
				if lim.DiskBytes, err = quantity.ParseSize(disk); err != nil {
					return fmt.Errorf("--disk: %w", err)
				}
			}
			var capBytes int64
			if outCap != "" {
				if capBytes, err = quantity.ParseSize(outCap); err != nil {
					return fmt.Errorf("--output-cap: %w", err)
				}
			}
			// Refuse nonsense before connecting; zero pids and disk take
			// the config's defaults in Run.
			check := lim
			if check.Pids == 0 {
				check.Pids = 2
			}
			if check.DiskBytes == 0 {
				check.DiskBytes = 1 << 20
			}
			if err := check.Validate(); err != nil {
				return err
			}
			if _, err := os.Stat(image); errors.Is(err, fs.ErrNotExist) && !looksLikeReference(image) {
				return errNoImage(image)
			}
			if runtime != "" {
				if err := sandbox.KnownRuntime(runtime); err != nil {
					return fmt.Errorf("--runtime: %w", err)
				}
			}
			if input != "" {
				// The sandbox checks the contents; catch a typo before connecting.
				if st, err := os.Stat(input); err != nil {
					return fmt.Errorf("--input: %w", err)
				} else if !st.IsDir() {
					return fmt.Errorf("--input %s: not a directory", input)
				}
			}
			cfg, err := a.sandboxConfig()
			if err != nil {
				return err
			}
			// One job: a shared shim would only outlive it.
			cfg.SharedShim = false
			ctx := cmd.Context()
			sb, err := sandbox.New(ctx, cfg, a.cliLogger())
			if err != nil {
				return err
			}
			defer sb.Close()

			var img sandbox.Image
			if st, statErr := os.Stat(image); statErr == nil && st.Mode().IsRegular() {
				f, err := os.Open(image)
				if err != nil {
					return err
				}
				img, err = sb.ImportImage(ctx, f, digest)
				f.Close()
				if err != nil {
					return err
				}
			} else {
				if digest != "" {
					return errors.New("--digest applies to a tarball; " + image + " is not a file")
				}
				if img, err = sb.Pull(ctx, image); err != nil {
					return err
				}
			}

			stdout, stderr := a.Stdout, a.Stderr
			if asJSON {
				stdout = a.Stderr
			}
			var output io.Writer
			var outFile *os.File
			if outDir != "" {
				if err := os.MkdirAll(outDir, 0o755); err != nil {
					return err
				}
				if outFile, err = os.Create(filepath.Join(outDir, "out.tar")); err != nil {
					return err
				}
				defer outFile.Close()
				output = outFile
			}
			res, runErr := sb.Run(ctx, sandbox.Job{
				Image: img.Name, Args: args, Env: env, Limits: lim, InputDir: input, Runtime: runtime,
				Stdout: stdout, Stderr: stderr, OutputCap: capBytes, Output: output,
			})
			if res == nil {
				return runErr
			}
			if outFile != nil {
				if err := outFile.Close(); err != nil {
					return err
				}
			}
			if asJSON {
				if err := writeJSON(a.Stdout, struct {
					Image sandbox.Image `json:"image"`
					*sandbox.Result
				}{img, res}); err != nil {
					return err
				}
			} else if res.Reason != sandbox.ReasonError {
				printResult(a.Stderr, res, outDir)
			}
			switch {
			case res.Reason == sandbox.ReasonError:
				if !asJSON {
					fmt.Fprintln(a.Stderr, "blackbox: job did not start:", res.Error)
				}
				return &ExitError{Code: 127}
			case res.ExitCode != 0:
				return &ExitError{Code: res.ExitCode}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&image, "image", "", "image tarball (OCI layout or docker archive) or reference to pull")
	f.StringVar(&digest, "digest", "", "sha256:<hex> the tarball must have")
	f.StringVar(&cpus, "cpus", "1", "CPU quota in cores (CFS), e.g. 1, 0.5, 500m")
	f.StringVar(&memory, "memory", "256MiB", "memory limit, e.g. 512Mi (2^20 bytes) or 512M (10^6 bytes); scratch pages count against it")
	f.StringVar(&disk, "disk", "", "size of the writable /tmp and /out, a size like --memory (default sandbox.default_disk_bytes)")
	f.Int64Var(&pids, "pids", 0, "pids limit (default sandbox.default_pids)")
	f.DurationVar(&timeout, "timeout", 10*time.Minute, "wall clock limit")
	f.StringArrayVar(&env, "env", nil, "environment variable K=V (repeatable)")
	f.StringVar(&input, "input", "", "directory whose files the job sees read-only at /in")
	f.StringVar(&outDir, "out", "", "directory to write the job's /out to, as out.tar")
	f.StringVar(&outCap, "output-cap", "", "cap on each of stdout and stderr (default sandbox.output_cap)")
	f.StringVar(&runtime, "runtime", "", "OCI runtime: runc, crun or runsc (default sandbox.runtime)")
	f.BoolVar(&asJSON, "json", false, "print the result record as JSON on stdout")
	return cmd
}

func printResult(w io.Writer, r *sandbox.Result, outDir string) {
	fmt.Fprintf(w, "blackbox: exit %d (%s) cpu %s peak memory %s oom kills %d wall %s\n",
		r.ExitCode, r.Reason, r.CPUTime.Round(time.Microsecond), quantity.FormatSize(r.PeakMemory), r.OOMKills, r.Wall.Round(time.Microsecond))
	if r.StdoutTruncated {
		fmt.Fprintf(w, "blackbox: stdout capped: the job wrote %s, only the first output_cap bytes are shown\n", quantity.FormatSize(r.StdoutBytes))
	}
	if r.StderrTruncated {
		fmt.Fprintf(w, "blackbox: stderr capped: the job wrote %s, only the first output_cap bytes are shown\n", quantity.FormatSize(r.StderrBytes))
	}
	if outDir != "" {
		fmt.Fprintf(w, "blackbox: /out: %s (%d files, %s)\n", filepath.Join(outDir, "out.tar"), r.Output.Files, r.Output.SHA256)
	}
}
