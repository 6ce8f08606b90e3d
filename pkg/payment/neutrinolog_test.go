//go:build integration

package payment

import (
	"os"

	"github.com/btcsuite/btclog"
	"github.com/lightninglabs/neutrino"
)

func init() {
	if os.Getenv("NEUTRINO_DEBUG") != "" {
		l := btclog.NewBackend(os.Stderr).Logger("NTRN")
		l.SetLevel(btclog.LevelDebug)
		neutrino.UseLogger(l)
	}
}
