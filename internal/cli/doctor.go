package cli

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/spf13/cobra"
)

func newDoctorCmd(a *App) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check whether this machine can sell compute: containerd, runtimes, cgroups, seccomp, userns, disk, and a real probe job",
		Long: `Check whether this machine can sell compute with this node's sandbox settings
(config section sandbox): root, containerd, the runtime, cgroups, seccomp, user
namespaces and disk; then run a real probe job through the sandbox exactly as the
node would (state dir, user namespace remap, runtime), and one under each other
runtime (runc, crun, runsc): the node offers only those that run it. Every
failure comes with its fix. Exits 1 when the machine cannot sell.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.sandboxConfig()
			if err != nil {
				return err
			}
			checks := sandbox.Diagnose(cmd.Context(), cfg)
			ok := true
			for _, c := range checks {
				if c.Status == sandbox.StatusFail {
					ok = false
				}
			}
			if asJSON {
				enc := json.NewEncoder(a.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					OK     bool            `json:"ok"`
					Checks []sandbox.Check `json:"checks"`
				}{ok, checks}); err != nil {
					return err
				}
			} else {
				for _, c := range checks {
					fmt.Fprintf(a.Stdout, "%-4s  %-10s  %s\n", strings.ToUpper(string(c.Status)), c.Name, c.Detail)
					if c.Fix != "" && c.Status != sandbox.StatusOK {
						fmt.Fprintf(a.Stdout, "      %-10s  fix: %s\n", "", c.Fix)
					}
				}
				if ok {
					fmt.Fprintln(a.Stdout, "This machine can sell compute.")
				} else {
					fmt.Fprintln(a.Stdout, "This machine cannot sell compute until the failures above are fixed.")
				}
			}
			if !ok {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checks as JSON")
	return cmd
}
