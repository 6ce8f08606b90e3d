package cli

import (
	"fmt"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
)

// chainString is status's chain source line: its state, its tip and the
// wallet's, and while connecting the last error and the next try.
func chainString(c api.ChainSource) string {
	s := fmt.Sprintf("%s %s, height %d, wallet synced to %d", c.Backend, c.State, c.Height, c.WalletHeight)
	if c.State == api.ChainConnecting {
		s = fmt.Sprintf("%s %s: %s", c.Backend, c.State, c.Error)
		if !c.NextRetry.IsZero() {
			s += fmt.Sprintf(" (next try in %s)", max(0, time.Until(c.NextRetry)).Round(time.Second))
		}
	}
	if c.Reconnects > 0 {
		s += fmt.Sprintf("; wallet reopened %d times", c.Reconnects)
	}
	return s
}
