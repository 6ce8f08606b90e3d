// Package netlab builds a small virtual internet out of Linux network
// namespaces for tests: a "public" segment (a bridge in a namespace of its
// own) whose hosts hold addresses libp2p considers public (11.0.0.0/24,
// which exists only inside these namespaces), and home LANs (192.168.N.0/24),
// each a bridge behind its own NAT router namespace. Routers NAT with
// nftables — endpoint-independent mapping (masquerade, which keeps the
// source port: full-cone-like) or port-dependent mapping (masquerade
// fully-random: symmetric) — and drop unsolicited traffic from outside.
// A home may sit behind an ISP's carrier-grade NAT (CGNAT: a shared
// 100.64.N.0/24 segment behind another NAT router), a double NAT.
// A home router may run a UPnP IGD / NAT-PMP daemon (Home.UPnP: Debian's
// miniupnpd-nftables), whose port mappings let the public side in.
// Impairments are router methods: random loss, a rate limit on the uplink
// (tc tbf), a partition and its heal. There is no added latency: the
// kernel this runs on has no netem, and netlab does not fake it.
//
// Everything is created by New and removed by the test's cleanup, also
// after a failed test; names carry the test process's PID, so parallel runs
// do not collide, and New removes what a dead earlier run left behind. It
// needs root, iproute2 (ip, tc), nftables (nft) and util-linux's nsenter
// (and miniupnpd for Home.UPnP).
//
// netlab owns the network only: processes run in a host through its
// Prefix (nsenter --net=... --), and Dial, Listen and Expose open sockets
// inside a host from the test process.
package netlab

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// PublicPrefix is the public segment's subnet. libp2p counts 11.0.0.0/8 as
// public (the documentation ranges 192.0.2.0/24, 198.51.100.0/24 and
// 203.0.113.0/24 are unroutable to it, RFC 1918 and 100.64/10 private).
var PublicPrefix = netip.MustParsePrefix("11.0.0.0/24")

// namePrefix starts every namespace netlab makes: nl<pid>x<n>-<role>.
const namePrefix = "nl"

// NAT is how a home router maps its LAN's connections to its WAN address.
type NAT int

const (
	// Cone is endpoint-independent mapping: masquerade keeps the source
	// port, so one LAN socket has one public address for every peer (hole
	// punching works). Filtering is conntrack's: only replies get in.
	Cone NAT = iota
	// Symmetric is port-dependent mapping: masquerade fully-random picks
	// a new public port per connection, so the address a peer observes is
	// useless to another (hole punching is expected to fail).
	Symmetric
)

func (n NAT) String() string {
	if n == Symmetric {
		return "symmetric"
	}
	return "cone"
}

var seq atomic.Int32

// Internet is one virtual internet of a test.
type Internet struct {
	t   testing.TB
	id  string // nl<pid>x<n>
	pub string // the public bridge's namespace

	mu      sync.Mutex
	nss     []string // every namespace made, in order
	nextPub int      // hosts on the public segment so far
	homes   int
	isps    int
}

// Host is a machine: a namespace with one interface, eth0.
type Host struct {
	Name string
	NS   string     // the namespace, for ip netns exec
	IP   netip.Addr // eth0's address
	in   *Internet
}

// Home is a LAN behind a NAT router.
type Home struct {
	Name   string
	NAT    NAT
	Router *Router
	Subnet netip.Prefix
	lan    string // the LAN bridge's namespace
	hosts  int
	in     *Internet
}

// Router is a home's NAT router: wan on the public segment, lan on the
// home's bridge.
type Router struct {
	Host // the router's namespace; IP is its WAN (public) address
	LAN  netip.Addr

	mu          sync.Mutex
	loss        int
	partitioned bool
	upnpLog     string // the UPnP daemon's log file (UPnP)
}

// Require fails (under CI=true) or skips t unless it runs as root with ip,
// tc and nft installed.
func Require(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to create network namespaces"
	}
	for _, c := range []string{"ip", "tc", "nft", "nsenter"} {
		if _, err := exec.LookPath(c); err != nil && why == "" {
			why = fmt.Sprintf("needs %s (make deps installs iproute2 and nftables): %v", c, err)
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI runs as root with make deps done)")
	}
	t.Skip(why)
}

// New builds the public segment and returns the internet; t's cleanup
// removes every namespace it made, with any process still inside.
func New(t testing.TB) *Internet {
	t.Helper()
	Require(t)
	RemoveStale()
	in := &Internet{t: t, id: fmt.Sprintf("%s%dx%d", namePrefix, os.Getpid(), seq.Add(1))}
	t.Cleanup(in.Close)
	in.pub = in.newNS("pub")
	in.must(in.pub, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	in.must(in.pub, "ip", "link", "set", "br0", "up")
	return in
}

// ID is the prefix of every namespace of this internet.
func (in *Internet) ID() string { return in.id }

// Close removes every namespace of the internet, killing the processes
// left in them. Closing twice is fine.
func (in *Internet) Close() {
	in.mu.Lock()
	nss := in.nss
	in.nss = nil
	in.mu.Unlock()
	for i := len(nss) - 1; i >= 0; i-- {
		removeNS(nss[i])
	}
}

// RemoveStale deletes the namespaces of netlab runs whose process is gone
// (a test killed before its cleanup), with any process left in them.
func RemoveStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], namePrefix) {
			continue
		}
		rest := strings.TrimPrefix(f[0], namePrefix)
		pidStr, _, ok := strings.Cut(rest, "x")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			removeNS(f[0])
		}
	}
}

// removeNS kills the processes in ns (SIGKILL: the run that started them
// is over) and deletes it.
func removeNS(ns string) {
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, p := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_ = exec.Command("ip", "netns", "del", ns).Run()
}

func (in *Internet) newNS(role string) string {
	in.t.Helper()
	ns := in.id + "-" + role
	in.mu.Lock()
	dup := slices.Contains(in.nss, ns)
	in.mu.Unlock()
	if dup {
		// Removing it as a leftover would kill the first one's processes.
		in.t.Fatalf("netlab: %s is taken: name every host of an internet differently", role)
	}
	removeNS(ns) // a leftover of a reused PID
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		in.t.Fatalf("netlab: ip netns add %s: %v: %s", ns, err, out)
	}
	in.mu.Lock()
	in.nss = append(in.nss, ns)
	in.mu.Unlock()
	in.must(ns, "ip", "link", "set", "lo", "up")
	return ns
}

// run runs a command inside ns.
func run(ns string, argv ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s (in %s): %w: %s", strings.Join(argv, " "), ns, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (in *Internet) must(ns string, argv ...string) {
	in.t.Helper()
	if _, err := run(ns, argv...); err != nil {
		in.t.Fatalf("netlab: %v", err)
	}
}

// nft feeds a ruleset to nft -f - inside ns.
func nft(ns, rules string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s\n%s", ns, err, out, rules)
	}
	return nil
}

// plug makes a veth pair: dev in ns (up, with addr) and a port on the
// bridge br0 of brNS.
func (in *Internet) plug(ns, dev string, addr netip.Prefix, brNS, port string) {
	in.t.Helper()
	if out, err := exec.Command("ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", brNS).CombinedOutput(); err != nil {
		in.t.Fatalf("netlab: veth %s/%s–%s/%s: %v: %s", ns, dev, brNS, port, err, out)
	}
	in.must(brNS, "ip", "link", "set", port, "master", "br0")
	in.must(brNS, "ip", "link", "set", port, "up")
	in.must(ns, "ip", "addr", "add", addr.String(), "dev", dev)
	in.must(ns, "ip", "link", "set", dev, "up")
}

// publicAddr is the next free address on the public segment.
func (in *Internet) publicAddr() (netip.Addr, string) {
	in.t.Helper()
	return in.nextAddr(&in.nextPub, PublicPrefix, 1)
}

// nextAddr counts one more host on the /24 subnet and returns its address,
// host part first upwards, and the name of its port on the subnet's bridge.
func (in *Internet) nextAddr(count *int, subnet netip.Prefix, first int) (netip.Addr, string) {
	in.t.Helper()
	in.mu.Lock()
	*count++
	n := *count
	in.mu.Unlock()
	if first+n-1 > 250 {
		in.t.Fatalf("netlab: %s is full", subnet)
	}
	a := subnet.Addr().As4()
	a[3] = byte(first + n - 1)
	return netip.AddrFrom4(a), "p" + strconv.Itoa(n)
}

// PublicHost adds a host on the public segment.
func (in *Internet) PublicHost(name string) *Host {
	in.t.Helper()
	ip, port := in.publicAddr()
	h := &Host{Name: name, NS: in.newNS("h-" + name), IP: ip, in: in}
	in.plug(h.NS, "eth0", netip.PrefixFrom(ip, PublicPrefix.Bits()), in.pub, port)
	return h
}

// Home adds a LAN 192.168.N.0/24 behind a router with the given NAT: its
// WAN on the public segment, .1 on the LAN.
func (in *Internet) Home(name string, nat NAT) *Home {
	in.t.Helper()
	wan, port := in.publicAddr()
	return in.home(name, nat, uplink{ns: in.pub, addr: netip.PrefixFrom(wan, PublicPrefix.Bits()), port: port})
}

// uplink is where a router's WAN plugs in: a bridge's namespace, the WAN
// address, the bridge port's name and, off the public segment, the
// gateway of its default route.
type uplink struct {
	ns   string
	addr netip.Prefix
	port string
	gw   netip.Addr
}

func (in *Internet) home(name string, nat NAT, up uplink) *Home {
	in.t.Helper()
	in.mu.Lock()
	in.homes++
	n := in.homes
	in.mu.Unlock()
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(n), 0}), 24)
	hm := &Home{Name: name, NAT: nat, Subnet: subnet, in: in}
	hm.lan = in.bridge("lan-" + name)
	hm.Router = in.router(name+"-router", "r-"+name, nat, up, hm.lan, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(n), 1}), 24))
	return hm
}

// bridge makes a namespace holding a bridge br0.
func (in *Internet) bridge(role string) string {
	in.t.Helper()
	ns := in.newNS(role)
	in.must(ns, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	in.must(ns, "ip", "link", "set", "br0", "up")
	return ns
}

// router makes a NAT router: wan on up, lan (address lanAddr) on the
// bridge in lanNS.
func (in *Internet) router(name, role string, nat NAT, up uplink, lanNS string, lanAddr netip.Prefix) *Router {
	in.t.Helper()
	r := &Router{Host: Host{Name: name, NS: in.newNS(role), IP: up.addr.Addr(), in: in}, LAN: lanAddr.Addr()}
	in.plug(r.NS, "wan", up.addr, up.ns, up.port)
	in.plug(r.NS, "lan", lanAddr, lanNS, "p0")
	if up.gw.IsValid() {
		in.must(r.NS, "ip", "route", "add", "default", "via", up.gw.String())
	}
	in.must(r.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	mode := "masquerade"
	if nat == Symmetric {
		mode = "masquerade fully-random"
	}
	// nat: LAN → WAN translated; filter: only replies (and DNAT'd port
	// forwards) come in from the WAN, as on a home router. Unsolicited
	// packets to the router itself are dropped in its input hook, before
	// conntrack confirms an entry for them: a hole punch's first packet,
	// arriving before the LAN host's own went out, would otherwise leave
	// an entry that takes the WAN port, and masquerade would then map the
	// host's packets to another port (no longer endpoint-independent).
	err := nft(r.NS, fmt.Sprintf(`
table ip nat {
	chain pre { type nat hook prerouting priority dstnat; }
	chain post { type nat hook postrouting priority srcnat; oifname "wan" %s; }
}
table inet filter {
	chain in {
		type filter hook input priority filter; policy accept;
		iifname "wan" ct state new drop
	}
	chain through {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct status dnat accept
		iifname "lan" oifname "wan" accept
	}
}
`, mode))
	if err != nil {
		in.t.Fatalf("netlab: %v", err)
	}
	if err := r.apply(); err != nil {
		in.t.Fatalf("netlab: %v", err)
	}
	return r
}

// ISP is a carrier-grade NAT: a router on the public segment with a
// shared segment 100.64.N.0/24 (RFC 6598) behind it, where its
// customers' home routers have their WAN — a double NAT.
type ISP struct {
	Name   string
	Router *Router
	Subnet netip.Prefix
	seg    string
	homes  int
	in     *Internet
}

// CGNAT adds an ISP whose carrier-grade NAT maps as nat.
func (in *Internet) CGNAT(name string, nat NAT) *ISP {
	in.t.Helper()
	in.mu.Lock()
	in.isps++
	n := in.isps
	in.mu.Unlock()
	isp := &ISP{Name: name, Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(n), 0}), 24), in: in}
	isp.seg = in.bridge("isp-" + name)
	wan, port := in.publicAddr()
	isp.Router = in.router(name+"-cgnat", "r-"+name, nat, uplink{ns: in.pub, addr: netip.PrefixFrom(wan, PublicPrefix.Bits()), port: port},
		isp.seg, netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(n), 1}), 24))
	return isp
}

// Home adds a home behind the ISP: its router's WAN on the ISP's shared
// segment (.2 upwards), its default route through the carrier-grade NAT.
func (isp *ISP) Home(name string, nat NAT) *Home {
	in := isp.in
	in.t.Helper()
	wan, port := in.nextAddr(&isp.homes, isp.Subnet, 2)
	return in.home(name, nat, uplink{ns: isp.seg, addr: netip.PrefixFrom(wan, 24), port: port, gw: isp.Router.LAN})
}

// Host adds a machine on the home's LAN, .2 upwards, its default route
// through the router.
func (hm *Home) Host(name string) *Host {
	in := hm.in
	in.t.Helper()
	ip, port := in.nextAddr(&hm.hosts, hm.Subnet, 2)
	h := &Host{Name: name, NS: in.newNS("h-" + name), IP: ip, in: in}
	in.plug(h.NS, "eth0", netip.PrefixFrom(h.IP, 24), hm.lan, port)
	in.must(h.NS, "ip", "route", "add", "default", "via", hm.Router.LAN.String())
	return h
}

// Prefix is the command prefix that runs a program in the host: nsenter
// into its network namespace only. Not ip netns exec, which also gives the
// program a mount namespace of its own: a blackbox seller mounts its jobs'
// scratch file systems under its data dir, and containerd's runc (in the
// test's mount namespace) would not see them.
func (h *Host) Prefix() []string {
	return []string{"nsenter", "--net=" + filepath.Join("/run/netns", h.NS), "--"}
}

// Command is exec.Command of name and args inside the host (through
// Prefix).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	p := h.Prefix()
	return exec.Command(p[0], append(append(p[1:], name), args...)...)
}

// Run runs a command inside the host and returns its combined output.
func (h *Host) Run(argv ...string) (string, error) { return run(h.NS, argv...) }

// impairTable is the ruleset of a router's impairments, in a table of its
// own so that they never touch the NAT: loss and partition in the forward
// hook, before the filter.
func (r *Router) apply() error {
	rules := "table inet impair {\n\tchain through {\n\t\ttype filter hook forward priority -10; policy accept;\n"
	if r.partitioned {
		rules += "\t\tdrop\n"
	}
	if r.loss == 100 {
		rules += "\t\tdrop\n"
	} else if r.loss > 0 {
		rules += fmt.Sprintf("\t\tnumgen random mod 100 < %d drop\n", r.loss)
	}
	rules += "\t}\n}\n"
	return nft(r.NS, "table inet impair\ndelete table inet impair\n"+rules)
}

// Loss drops percent of the packets the router forwards, either way, at
// random (nftables numgen); 0 stops it.
func (r *Router) Loss(percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("loss %d%%: want 0..100", percent)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loss = percent
	return r.apply()
}

// Partition cuts the home off: the router forwards nothing either way.
func (r *Router) Partition() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.partitioned = true
	return r.apply()
}

// Heal ends a partition.
func (r *Router) Heal() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.partitioned = false
	return r.apply()
}

// RateLimit caps the uplink (what the home sends to the internet) at mbit
// megabits per second with tc tbf on the WAN interface; 0 removes the cap.
func (r *Router) RateLimit(mbit int) error {
	if mbit < 0 {
		return fmt.Errorf("rate %d mbit: negative", mbit)
	}
	if mbit == 0 {
		_, err := r.Run("tc", "qdisc", "del", "dev", "wan", "root")
		if err != nil && strings.Contains(err.Error(), "No such file") {
			return nil
		}
		return err
	}
	_, err := r.Run("tc", "qdisc", "replace", "dev", "wan", "root", "tbf",
		"rate", strconv.Itoa(mbit)+"mbit", "burst", "32kbit", "latency", "400ms")
	return err
}

// Forward forwards the router's WAN port (TCP and UDP) to the same port of
// a host on its LAN, as an operator does for "open or forward 7460".
func (r *Router) Forward(port int, to *Host) error {
	for _, proto := range []string{"tcp", "udp"} {
		if _, err := r.Run("nft", "add", "rule", "ip", "nat", "pre", "iifname", "wan", proto, "dport", strconv.Itoa(port),
			"dnat", "to", to.IP.String()); err != nil {
			return err
		}
	}
	return nil
}

// Watch starts counting the bytes the router lets in from peer (a public
// address: another router, a relay) — counted after its filter, so probes
// it drops (a failed hole punch) do not count — so that a test can tell
// which way traffic really went; Traffic reads the count.
func (r *Router) Watch(peer netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.Run("nft", "list", "table", "inet", "watch"); err != nil {
		if err := nft(r.NS, "table inet watch {\n\tchain count {\n\t\ttype filter hook forward priority 10; policy accept;\n\t}\n}\n"); err != nil {
			return err
		}
	}
	_, err := r.Run("nft", "add", "rule", "inet", "watch", "count", "iifname", "wan", "ip", "saddr", peer.String(), "counter")
	return err
}

var counterRule = regexp.MustCompile(`ip saddr (\S+) counter packets \d+ bytes (\d+)`)

// Traffic is how many bytes the router let in from peer since Watch(peer).
func (r *Router) Traffic(peer netip.Addr) (uint64, error) {
	out, err := r.Run("nft", "list", "table", "inet", "watch")
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, m := range counterRule.FindAllStringSubmatch(out, -1) {
		if m[1] == peer.String() {
			b, _ := strconv.ParseUint(m[2], 10, 64)
			n += b
		}
	}
	return n, nil
}
