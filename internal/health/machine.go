package health

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/quantity"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Check names of the machine side.
const (
	NameDisk  = "disk"
	NameReach = "reachability"
)

// DefaultContainerdRoot is where the system containerd keeps images and
// snapshots (its root), checked for room when the node uses that containerd.
const DefaultContainerdRoot = "/var/lib/containerd"

// Disk checks the room the node sells and needs: the data dir's file
// system, of which the node offers what meter.reserve.disk leaves (capped
// by meter.max.disk), and containerd's root, where job images unpack.
func Disk(dataDir string, pol meter.Policy, sb sandbox.Config) Check {
	free, err := freeBytes(dataDir)
	if err != nil {
		return Check{Name: NameDisk, Status: Warn, Detail: err.Error()}
	}
	c := diskCheck(dataDir, free, pol.Reserve.Disk, pol.Caps.Disk, sb.DefaultDiskBytes)
	if c.Status == Fail || sb.Address != sandbox.DefaultConfig().Address {
		return c
	}
	// The system containerd: its images unpack under its root.
	if rootFree, err := freeBytes(DefaultContainerdRoot); err == nil {
		c = worst(c, containerdDisk(rootFree, sb.MaxUnpackedBytes))
	}
	return c
}

// diskCheck weighs the free bytes of the data dir's file system against
// the reserve, the cap, and what one job's scratch needs by default.
func diskCheck(dir string, free, reserve, maxDisk, jobDisk int64) Check {
	offered := min(free-reserve, maxDisk)
	if offered < 0 {
		offered = 0
	}
	detail := fmt.Sprintf("%s free under %s, %s of it offered (meter.reserve.disk %s)",
		quantity.FormatSize(free), dir, quantity.FormatSize(offered), quantity.FormatSize(reserve))
	if offered < jobDisk {
		return Check{Name: NameDisk, Status: Fail, Detail: detail,
			Fix: fmt.Sprintf("free space on that file system, or lower meter.reserve.disk: a job's scratch needs %s (sandbox.default_disk_bytes)", quantity.FormatSize(jobDisk))}
	}
	return Check{Name: NameDisk, Status: OK, Detail: detail}
}

// containerdDisk weighs the free bytes under containerd's root against one
// image's unpacked size.
func containerdDisk(free, maxUnpacked int64) Check {
	detail := fmt.Sprintf("%s free under containerd's root %s", quantity.FormatSize(free), DefaultContainerdRoot)
	switch {
	case free < 1<<30:
		return Check{Name: NameDisk, Status: Fail, Detail: detail, Fix: "free space there: images unpack under containerd's root"}
	case free < maxUnpacked:
		return Check{Name: NameDisk, Status: Warn, Detail: detail,
			Fix: "less room than one image may take (sandbox.max_unpacked_bytes): free space or lower it"}
	}
	return Check{Name: NameDisk, Status: OK, Detail: detail}
}

// worst joins two findings of one check: the worse status, both details.
func worst(a, b Check) Check {
	rank := map[Status]int{OK: 0, Warn: 1, Fail: 2}
	out := a
	out.Detail = a.Detail + "; " + b.Detail
	if rank[b.Status] > rank[a.Status] {
		out.Status, out.Fix = b.Status, b.Fix
	}
	return out
}

// freeBytes is the space an unprivileged writer may still use on the file
// system holding path (or its nearest existing parent).
func freeBytes(path string) (int64, error) {
	for path != "/" {
		if _, err := os.Stat(path); err == nil {
			break
		}
		path = parent(path)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("free space under %s: %w", path, err)
	}
	return int64(fs.Bavail) * int64(fs.Bsize), nil
}

func parent(p string) string {
	i := strings.LastIndexByte(strings.TrimSuffix(p, "/"), '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// Reachability says whether peers elsewhere can reach the node's listen
// addresses, from the addresses alone: a public one, only private ones
// (behind a router), or only loopback. It is what doctor can say with no
// daemon running; a running node says more (ReachabilityOf), from what
// peers found dialling it back (AutoNAT).
func Reachability(addrs []ma.Multiaddr) Check {
	public, private, loop, port := classify(addrs)
	switch {
	case len(public) > 0:
		return Check{Name: NameReach, Status: OK,
			Detail: fmt.Sprintf("public address %s (%s): reachable if no firewall blocks the port%s", strings.Join(public, ", "), port, later)}
	case len(private) > 0:
		return Check{Name: NameReach, Status: Warn,
			Detail: fmt.Sprintf("only private addresses %s (%s): buyers outside this network cannot reach the node directly%s", strings.Join(private, ", "), port, later),
			Fix:    fmt.Sprintf("forward %s on the router to %s, or enable UPnP on the router (network.port_mapping), or set network.relays", port, private[0])}
	case len(loop) > 0:
		return Check{Name: NameReach, Status: Warn,
			Detail: fmt.Sprintf("listening on loopback only (%s): only nodes on this machine can reach it%s", port, later),
			Fix:    "listen on all interfaces: listen: [/ip4/0.0.0.0/tcp/7460, /ip4/0.0.0.0/udp/7460/quic-v1]"}
	}
	return Check{Name: NameReach, Status: Warn, Detail: "no IP listen address" + later, Fix: "set listen (see configs/blackbox.yaml)"}
}

// later ends Reachability's details: doctor without a daemon cannot ask.
const later = "; a running node checks from outside (AutoNAT): see `blackbox status`"

// classify sorts addrs' IPs into public, private and loopback ones, and
// names their ports ("tcp 7460, udp 7460").
func classify(addrs []ma.Multiaddr) (public, private, loop []string, port string) {
	ports := map[string]bool{}
	for _, a := range expand(addrs) {
		ip, err := manet.ToIP(a)
		if err != nil {
			continue
		}
		for _, proto := range []int{ma.P_TCP, ma.P_UDP} {
			if p, err := a.ValueForProtocol(proto); err == nil {
				ports[ma.ProtocolWithCode(proto).Name+" "+p] = true
			}
		}
		switch {
		case manet.IsIPLoopback(a):
			loop = appendNew(loop, ip.String())
		case manet.IsPublicAddr(a):
			public = appendNew(public, ip.String())
		default:
			private = appendNew(private, ip.String())
		}
	}
	var ps []string
	for p := range ports {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return public, private, loop, strings.Join(ps, ", ")
}

// Reach is what a running node knows of its reachability (the status's
// reachability, see api.Reachability for each field).
type Reach struct {
	State       string // unknown, public, private, unreachable
	Forced      bool   // network.reachability forces State
	PublicAddrs []string
	// PublicAddrsFrom is confirmed, listen or observed (api.Reachability).
	PublicAddrsFrom string
	RelayAddrs      []string
	Relays          []string
	HolePunching    string // possible, unlikely, unknown, not_needed, off
	NATTCP          string
	NATUDP          string
	PortMapping     string // off, searching, no_router, refused, mapped
	MappedAddrs     []string
	// PortMappingProtocol is the router's that answered: upnp, natpmp
	// or "".
	PortMappingProtocol string
	// Internet says the node is meant for the internet market (a
	// bootstrap peer has a public address): unreachable there fails.
	Internet bool
}

// mappedBy names the protocol the router mapped the ports with.
func (r Reach) mappedBy() string {
	switch r.PortMappingProtocol {
	case "upnp":
		return "UPnP"
	case "natpmp":
		return "NAT-PMP"
	}
	return "UPnP / NAT-PMP"
}

// ReachabilityOf is the reachability check of a running node: AutoNAT's
// verdict (peers dialled it back, or could not), the relay slots it holds,
// and what its NAT allows, each state with what to do. listen are its
// listen addresses (for the port and the address to forward to).
func ReachabilityOf(r Reach, listen []ma.Multiaddr) Check {
	_, private, _, port := classify(listen)
	if port == "" {
		port = "the listen port"
	}
	to := "this machine"
	if len(private) > 0 {
		to = private[0]
	}
	forward := fmt.Sprintf("forward %s on the router to %s", port, to)
	switch r.PortMapping {
	case "off", "":
		forward += ", or enable UPnP on the router and set network.port_mapping: true"
	case "no_router":
		forward += ", or enable UPnP / NAT-PMP on the router (network.port_mapping is on and no router answered)"
	case "refused":
		forward += ", or let the router's UPnP / NAT-PMP map ports for this machine (a router answered but mapped no port)"
	case "mapped":
		forward = fmt.Sprintf("the router maps %s to this node (%s) but peers could not dial it: another NAT upstream (the ISP's carrier-grade NAT) or a firewall is in the way; ask the ISP for a public address, or ", strings.Join(r.MappedAddrs, ", "), r.mappedBy()) + forward
	default: // searching
		forward += ", or enable UPnP / NAT-PMP on the router (network.port_mapping is on and still looking for one)"
	}
	why := "AutoNAT: peers dialled it back"
	if r.Forced {
		why = "forced by network.reachability"
	}
	switch r.State {
	case "public":
		at := "its listen addresses"
		if len(r.PublicAddrs) > 0 {
			at = strings.Join(r.PublicAddrs, ", ")
		}
		if r.PortMapping == "mapped" {
			why += "; the router maps " + strings.Join(r.MappedAddrs, ", ") + " to it (" + r.mappedBy() + ")"
		}
		return Check{Name: NameReach, Status: OK, Detail: fmt.Sprintf("public: peers reach it directly at %s (%s)", at, why)}
	case "private":
		if !r.Forced {
			why = "AutoNAT: peers could not dial it back"
		}
		punch := map[string]string{
			"possible": "hole punching should upgrade relayed connections to direct ones (endpoint-independent NAT)",
			"unlikely": "hole punching will rarely work (endpoint-dependent, symmetric NAT): jobs go through the relay's limits",
			"off":      "hole punching is off (network.hole_punching): jobs go through the relay's limits",
		}[r.HolePunching]
		if punch == "" {
			punch = "whether hole punching works is not known yet (NAT kind unknown)"
		}
		return Check{Name: NameReach, Status: Warn,
			Detail: fmt.Sprintf("behind NAT (%s)%s: reachable through relay %s (%s); %s", why, seenAt(r), strings.Join(r.Relays, ", "), strings.Join(r.RelayAddrs, ", "), punch),
			Fix:    "for direct connections: " + forward}
	case "unreachable":
		if !r.Forced {
			why = "AutoNAT: peers could not dial it back"
		}
		st := Warn
		if r.Internet {
			st = Fail
		}
		return Check{Name: NameReach, Status: st,
			Detail: fmt.Sprintf("unreachable: behind NAT (%s)%s with no relay slot: only machines on its own network can reach it", why, seenAt(r)),
			Fix:    forward + "; or use a relay: set network.relays to a public blackbox node's address (/ip4/…/tcp/7460/p2p/…)"}
	}
	c := Reachability(listen)
	c.Detail = "AutoNAT has no verdict yet (it needs connected peers to dial it back; on a LAN or loopback market it never has one); from the addresses: " + strings.TrimSuffix(c.Detail, later)
	return c
}

// seenAt says where peers see a node behind NAT, if they told it.
func seenAt(r Reach) string {
	if r.PublicAddrsFrom != "observed" || len(r.PublicAddrs) == 0 {
		return ""
	}
	return ", seen by peers at " + strings.Join(r.PublicAddrs, ", ") + " (observed, not confirmed reachable)"
}

// expand replaces unspecified addresses (0.0.0.0, ::) by this machine's
// interface addresses, as the libp2p host does.
func expand(addrs []ma.Multiaddr) []ma.Multiaddr {
	ifaces, err := manet.InterfaceMultiaddrs()
	if err != nil {
		return addrs
	}
	out, err := manet.ResolveUnspecifiedAddresses(addrs, ifaces)
	if err != nil {
		return addrs
	}
	return out
}

func appendNew(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}
