package sandbox

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// The peer of a socket this process serves is this process, in this mount
// namespace: nothing to refuse.
func TestMountNSSameProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	pid, err := socketPeerPID(path)
	if err != nil || pid != os.Getpid() {
		t.Fatalf("peer pid %d, %v; want %d", pid, err, os.Getpid())
	}
	if same, mine, theirs, err := sameMountNS(pid); err != nil || !same || mine == "" || mine != theirs {
		t.Fatalf("same namespace: %v %q %q %v", same, mine, theirs, err)
	}
	if err := checkMountNS(path); err != nil {
		t.Fatal(err)
	}
	// No socket: nothing can be told, nothing is refused here (the
	// containerd dial says what is wrong).
	if err := checkMountNS(filepath.Join(t.TempDir(), "none.sock")); err != nil {
		t.Fatal(err)
	}
}
