package store

import (
	"os"
	"runtime"
	"sync"
)

// syncWriters is how many threads a DB's writers can hold in fdatasync at
// once: the payment log's group writer and bbolt's one writer (the Later
// commits and compactions go through bbolt's).
const syncWriters = 2

// RaiseProcs gives the process a scheduler slot (GOMAXPROCS) for each DB
// writer that may be blocked in fdatasync, on top of its CPUs, and returns
// the new GOMAXPROCS. A goroutine in a system call keeps its slot until
// the runtime's monitor hands it off, which takes about as long as the
// fdatasync itself (150–350 µs on a virtual disk): with one slot per CPU,
// the payment log's writer and a bbolt commit syncing at once leave a
// 2-CPU seller none for the signature checks of the payments waiting on
// them (32 channels paying at once: 0.33 of raw sign+verify, 0.53 with the
// two slots). The extra slots run Go code only while a writer is blocked
// in a sync, so CPU-bound work still gets one slot per CPU on average.
// A GOMAXPROCS set in the environment is left as it is. The daemon (serve)
// calls it at start; calling it again changes nothing (the CPUs are
// counted on the first call).
func RaiseProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := baseProcs() + syncWriters
	runtime.GOMAXPROCS(n)
	return n
}

// baseProcs is the runtime's own GOMAXPROCS (the CPUs this process may
// use), as it was before RaiseProcs first changed it.
var baseProcs = sync.OnceValue(func() int { return runtime.GOMAXPROCS(0) })
