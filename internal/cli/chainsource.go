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
			if in := time.Until(c.NextRetry); in >= time.Second {
				s += fmt.Sprintf(" (next try in %s)", in.Round(time.Second))
			} else {
				s += " (trying again now)"
			}
		}
	}
	if c.Reconnects > 0 {
		s += fmt.Sprintf("; wallet reopened %d times", c.Reconnects)
	}
	return s
}
