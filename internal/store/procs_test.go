package store_test

import (
	"runtime"
	"testing"

	"github.com/blackbox-market/blackbox/internal/store"
)

// TestRaiseProcs: two scheduler slots over the CPUs, however often it is
// called; none when GOMAXPROCS is set in the environment.
func TestRaiseProcs(t *testing.T) {
	was := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(was) })
	first := store.RaiseProcs()
	if first != was+2 || runtime.GOMAXPROCS(0) != first {
		t.Fatalf("GOMAXPROCS %d then %d (RaiseProcs said %d), want %d", was, runtime.GOMAXPROCS(0), first, was+2)
	}
	if again := store.RaiseProcs(); again != first {
		t.Fatalf("a second call made it %d, want %d", again, first)
	}
	runtime.GOMAXPROCS(was)
	t.Setenv("GOMAXPROCS", "1")
	if got := store.RaiseProcs(); got != was || runtime.GOMAXPROCS(0) != was {
		t.Fatalf("with GOMAXPROCS set in the environment: %d, want it left at %d", got, was)
	}
}
