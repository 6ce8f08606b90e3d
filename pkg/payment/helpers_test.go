package payment

import (
	"bytes"
	"log/slog"
	"os"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// Helpers shared by the unit tests and the regtest tests (build tag
// integration) of this package.

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func seed(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func newManager(t testing.TB, cfg Config, chain Chain, st ChannelStore, sd []byte, f Funder) *Manager {
	t.Helper()
	keys, err := NewKeyring(sd, btcdtest.Params)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(ManagerConfig{Config: cfg, Chain: chain, Store: st, Keys: keys, Funder: f, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
