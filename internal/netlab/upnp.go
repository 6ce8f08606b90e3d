package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// UPnPDaemon is the program UPnP runs: Debian's miniupnpd-nftables.
const UPnPDaemon = "miniupnpd"

// upnpRules hooks the chains miniupnpd fills into the router's nftables,
// in a table of its own (its default, inet filter, is netlab's): a DNAT
// rule it adds in prerouting_miniupnpd maps the WAN port to the LAN host,
// and netlab's forward filter lets DNAT'd connections in (ct status dnat),
// as it does for Forward; the accept rules it adds in its forward chain
// change nothing here (an accept in one base chain does not pass another).
const upnpRules = `
table inet miniupnpd {
	chain forward {
		type filter hook forward priority -5; policy accept;
		jump miniupnpd
	}
	chain miniupnpd {
	}
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump prerouting_miniupnpd
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		jump postrouting_miniupnpd
	}
	chain prerouting_miniupnpd {
	}
	chain postrouting_miniupnpd {
	}
}
`

// UPnP runs a UPnP IGD and NAT-PMP/PCP daemon (miniupnpd) on the home's
// router, as a home router with UPnP enabled: hosts on the LAN (and only
// they, each for itself: secure mode) may map router WAN ports 1024–65535
// to their own ports 1024–65535, and the mappings let unsolicited inbound
// traffic through the router's NAT and firewall. It stops with the
// internet (and when the test ends). Its log is LogUPnP's.
func (hm *Home) UPnP() error { return hm.portMapping(true) }

// NATPMP is UPnP with the UPnP IGD off: the router answers NAT-PMP/PCP
// (UDP 5351) only, as routers that speak only NAT-PMP do (Apple's, and
// many with UPnP switched off). Mappings, log and PortMappings are UPnP's.
func (hm *Home) NATPMP() error { return hm.portMapping(false) }

// portMapping runs miniupnpd on the home's router, with the UPnP IGD on
// or off (NAT-PMP/PCP is always on).
func (hm *Home) portMapping(upnp bool) error {
	in := hm.in
	in.t.Helper()
	if _, err := exec.LookPath(UPnPDaemon); err != nil {
		return fmt.Errorf("netlab: UPnP needs %s (make deps installs miniupnpd-nftables): %w", UPnPDaemon, err)
	}
	r := hm.Router
	if err := nft(r.NS, upnpRules); err != nil {
		return fmt.Errorf("netlab: UPnP: %w", err)
	}
	dir, err := os.MkdirTemp("", r.NS+"-upnp-")
	if err != nil {
		return fmt.Errorf("netlab: UPnP: %w", err)
	}
	in.t.Cleanup(func() { os.RemoveAll(dir) })
	subnet := hm.Subnet.String()
	conf := strings.Join([]string{
		"ext_ifname=wan",
		"listening_ip=lan",
		"http_port=0",
		"enable_natpmp=yes",
		"enable_upnp=" + map[bool]string{true: "yes", false: "no"}[upnp],
		"secure_mode=yes",
		"system_uptime=yes",
		"notify_interval=60",
		"clean_ruleset_interval=600",
		"ipv6_disable=yes",
		"uuid=" + fmt.Sprintf("fc4ec57e-b051-11db-88f8-%012x", hm.Subnet.Addr().As4()[2]),
		"lease_file=" + filepath.Join(dir, "leases"),
		"upnp_table_name=miniupnpd",
		"upnp_nat_table_name=miniupnpd",
		"upnp_forward_chain=miniupnpd",
		"upnp_nat_chain=prerouting_miniupnpd",
		"upnp_nat_postrouting_chain=postrouting_miniupnpd",
		"allow 1024-65535 " + subnet + " 1024-65535",
		"deny 0-65535 0.0.0.0/0 0-65535",
		"",
	}, "\n")
	cf := filepath.Join(dir, "miniupnpd.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("netlab: UPnP: %w", err)
	}
	logf, err := os.Create(filepath.Join(dir, "miniupnpd.log"))
	if err != nil {
		return fmt.Errorf("netlab: UPnP: %w", err)
	}
	// -d: in the foreground, logging to stderr (debug included).
	cmd := r.Command(UPnPDaemon, "-d", "-f", cf, "-P", filepath.Join(dir, "miniupnpd.pid"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// No Pdeathsig: it fires when the OS thread that forked exits, and
	// netlab's namespace threads do exit (Close kills what is left).
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("netlab: start %s: %w", UPnPDaemon, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	in.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	r.mu.Lock()
	r.upnpLog = logf.Name()
	r.mu.Unlock()
	// Ready when it listens for NAT-PMP (UDP 5351) on the LAN side.
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("netlab: %s exited: %s", UPnPDaemon, r.LogUPnP())
		default:
		}
		if out, _ := r.Run("ss", "-Hlun", "sport = :5351"); strings.Contains(out, "5351") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netlab: %s does not listen on UDP 5351 after 10 s: %s", UPnPDaemon, r.LogUPnP())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LogUPnP is what the router's UPnP daemon logged so far ("" without
// one).
func (r *Router) LogUPnP() string {
	r.mu.Lock()
	name := r.upnpLog
	r.mu.Unlock()
	if name == "" {
		return ""
	}
	b, _ := os.ReadFile(name)
	return string(b)
}

// PortMappings are the port forwards the router's UPnP daemon holds now,
// one a string "tcp 51291 192.168.1.2:7460" (protocol, WAN port, LAN
// host:port); a rule of another shape is listed as nft prints it.
func (r *Router) PortMappings() ([]string, error) {
	out, err := r.Run("nft", "list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd")
	if err != nil {
		return nil, err
	}
	var rules []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.Contains(line, "dnat") {
			continue
		}
		// miniupnpd matches the IP header's protocol byte itself:
		// iif "wan" @nh,72,8 0x6 th dport 51291 dnat ip to 192.168.1.2:7460
		if m := mappingRule.FindStringSubmatch(line); m != nil {
			proto := map[string]string{"6": "tcp", "11": "udp"}[m[1]]
			if proto != "" {
				line = proto + " " + m[2] + " " + m[3]
			}
		}
		rules = append(rules, line)
	}
	return rules, nil
}

var mappingRule = regexp.MustCompile(`@nh,72,8 0x([0-9a-f]+) th dport (\d+) dnat ip to (\S+)`)
