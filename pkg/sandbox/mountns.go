package sandbox

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// A job's scratch (/tmp and /out) is a tmpfs the daemon mounts under the
// state directory (mountScratch), and containerd's runc bind-mounts it into
// the container. runc resolves that path in containerd's mount namespace,
// so the daemon must run in the same one: a mount made in a private
// namespace (systemd's PrivateTmp=, ProtectSystem=, ProtectHome= and the
// like each give the service one, and mounts made there never propagate
// back) is not what the container gets. The job would write /tmp and /out
// to the state directory's disk, with no size cap, and the daemon would
// read its own empty tmpfs as /out; after a restart the namespace and the
// tmpfs of every re-attached job are gone. So the sandbox refuses to start
// in a mount namespace other than containerd's (the node then does not
// sell and says why; doctor says how to fix it), and the systemd unit in
// deploy/ uses none of those settings.

// ErrMountNamespace is why a sandbox does not start in a mount namespace
// other than containerd's.
var ErrMountNamespace = errors.New("this process runs in a mount namespace other than containerd's (systemd PrivateTmp=, ProtectSystem=, ProtectHome=, ReadOnlyPaths= and the like make one): the jobs' scratch tmpfs it mounts would not be the one the containers get, and would be lost at a restart")

// mountNSFix is what to do about ErrMountNamespace.
const mountNSFix = "run blackbox in containerd's mount namespace: remove PrivateTmp=, ProtectSystem=, ProtectHome= (and other file system namespacing) from its unit, as deploy/blackbox.service does, then systemctl daemon-reload && systemctl restart blackbox"

// checkMountNS returns ErrMountNamespace (wrapped, with both namespaces)
// when the process serving containerd's socket at address sees another
// mount namespace than this process. When that cannot be told (no peer
// credentials, a containerd in another PID namespace), it returns nil.
func checkMountNS(address string) error {
	pid, err := socketPeerPID(address)
	if err != nil || pid <= 0 {
		return nil
	}
	same, mine, theirs, err := sameMountNS(pid)
	if err != nil || same {
		return nil
	}
	return fmt.Errorf("%w (this process: %s, containerd pid %d: %s)", ErrMountNamespace, mine, pid, theirs)
}

// socketPeerPID is the PID of the process that accepted a connection to
// the Unix socket at path (SO_PEERCRED).
func socketPeerPID(path string) (int, error) {
	c, err := net.DialTimeout("unix", path, 3*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return int(cred.Pid), nil
}

// sameMountNS reports whether process pid is in this process's mount
// namespace, and both namespaces' names (mnt:[inode]).
func sameMountNS(pid int) (same bool, mine, theirs string, err error) {
	mine, err = os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return false, "", "", err
	}
	theirs, err = os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/mnt")
	if err != nil {
		return false, mine, "", err
	}
	return mine == theirs, mine, theirs, nil
}
