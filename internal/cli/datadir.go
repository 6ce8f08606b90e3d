package cli

import (
	"os"

	"github.com/spf13/cobra"
)

// ServiceDataDir is the system service's data dir (deploy/blackbox.service:
// StateDirectory=blackbox).
const ServiceDataDir = "/var/lib/blackbox"

// dataDirHelp is --data-dir's help: the order findDataDir follows.
const dataDirHelp = `data directory; default, first found: env BLACKBOX_DATA_DIR; the per-user
dir (` + "$XDG_DATA_HOME/blackbox or ~/.local/share/blackbox" + `) if it exists; the system
service's ` + ServiceDataDir + ` if it exists (not for serve); else the per-user dir`

// findDataDir is the data dir when --data-dir is not given (see dataDirHelp):
// a CLI command on a machine running the system service finds the
// service's node without --data-dir, while `serve` started by a user never
// takes over the service's directory.
func findDataDir(cmd *cobra.Command) string {
	serve := cmd != nil && cmd.Name() == "serve"
	return pickDataDir(os.Getenv("BLACKBOX_DATA_DIR"), DefaultDataDir(), ServiceDataDir, serve)
}

// pickDataDir is findDataDir's rule, with every input given.
func pickDataDir(env, userDir, serviceDir string, serve bool) string {
	switch {
	case env != "":
		return env
	case exists(userDir):
		return userDir
	case !serve && exists(serviceDir):
		return serviceDir
	}
	return userDir
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
