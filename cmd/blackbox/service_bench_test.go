//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/containerd/containerd"
)

// benchServiceScript serves a small page and a 10 MiB file.
const benchServiceScript = "mkdir -p /tmp/www && echo hello-service > /tmp/www/index.html && " +
	"head -c 10485760 /dev/zero > /tmp/www/big.bin && exec httpd -f -p 8080 -h /tmp/www"

// benchServiceFlags: room for the 10 MiB file in the sandbox's memory.
var benchServiceFlags = []string{"--service", "--port", "8080", "--health", "http:/index.html", "--cpus", "0.5", "--memory", "128MiB",
	"--max-price", "2000000", "--time", "30m"}

// containerPid is the pid of the running task of contract id's container.
func (m *market) containerPid(id string) int {
	t := m.t
	t.Helper()
	pid := 0
	m.eachJobContainer(id, func(ctx context.Context, ct containerd.Container) bool {
		task, err := ct.Task(ctx, nil)
		if err != nil {
			return true
		}
		st, err := task.Status(ctx)
		t.Logf("container %s of contract %s: task pid %d, %s (%v)", ct.ID(), id[:12], task.Pid(), st.Status, err)
		if err == nil && st.Status == containerd.Running {
			pid = int(task.Pid())
			return false
		}
		return true
	})
	if pid == 0 {
		t.Fatalf("no running container of contract %s", id)
	}
	return pid
}

// timedGets runs n GETs of path through client, one at a time, and
// returns each one's duration; it fails the benchmark on any error.
func timedGets(b *testing.B, client *http.Client, base, path string, n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	for range n {
		at := time.Now()
		resp, err := client.Get(base + path)
		if err != nil {
			b.Fatalf("GET %s%s: %v", base, path, err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("GET %s%s: %d %v", base, path, resp.StatusCode, err)
		}
		out = append(out, time.Since(at))
	}
	return out
}

func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}

// BenchmarkServiceForward: requests/s and p99 latency through the
// buyer's forward (TCP to the buyer's node, a libp2p stream to the seller,
// setns-dialled into the job's netns) against straight to the container's
// port on the seller (this process dials into the job's netns, the same
// machine), in the same run, interleaved in rounds: small responses (a
// 14-byte page, BLACKBOX_BENCH_SMALL requests per round, 100) and a 10 MiB
// download (BLACKBOX_BENCH_BIG per round, 3); 3 rounds. One client, one
// connection per request (the forward opens a stream per connection).
func BenchmarkServiceForward(b *testing.B) {
	m := newMarket(b)
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 5_000_000)
	m.waitMarket(buyer, 1)
	small := benchEnvCount(b, "BLACKBOX_BENCH_SMALL", 100, 10)
	big := benchEnvCount(b, "BLACKBOX_BENCH_BIG", 3, 1)
	args := append(append([]string{"submit", "--json", "--image", busybox(b, b.TempDir())}, benchServiceFlags...), "--", "sh", "-c", benchServiceScript)
	out, err := buyer.cli(args...)
	if err != nil {
		b.Fatalf("submit: %v: %s", err, out)
	}
	id := jsonField(b, out, "id")
	var fwd, cid string
	waitFor(b, 120*time.Second, "the service healthy", func() bool {
		s := buyer.job(id).Service
		if s == nil || s.Healthy() != 1 || len(s.Forwards) == 0 {
			return false
		}
		fwd, cid = s.Forwards[0], s.Running[0].ContractID
		return true
	})
	pid := m.containerPid(cid)
	viaFwd := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	direct := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return sandbox.DialNetNS(ctx, pid, 8080) }}}
	var fs, ds, fb, db []time.Duration
	for range 3 {
		fs = append(fs, timedGets(b, viaFwd, "http://"+fwd, "/index.html", small)...)
		ds = append(ds, timedGets(b, direct, "http://container", "/index.html", small)...)
		fb = append(fb, timedGets(b, viaFwd, "http://"+fwd, "/big.bin", big)...)
		db = append(db, timedGets(b, direct, "http://container", "/big.bin", big)...)
	}
	rps := func(ds []time.Duration) float64 { return float64(len(ds)) / sum(ds).Seconds() }
	mibps := func(ds []time.Duration) float64 { return float64(len(ds)) * 10 / sum(ds).Seconds() }
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(rps(fs), "fwd_small_req/s")
	b.ReportMetric(rps(ds), "direct_small_req/s")
	b.ReportMetric(ms(p99(fs)), "fwd_small_p99_ms")
	b.ReportMetric(ms(p99(ds)), "direct_small_p99_ms")
	b.ReportMetric(mibps(fb), "fwd_10MiB_MiB/s")
	b.ReportMetric(mibps(db), "direct_10MiB_MiB/s")
	b.ReportMetric(ms(p99(fb)), "fwd_10MiB_p99_ms")
	b.ReportMetric(ms(p99(db)), "direct_10MiB_p99_ms")
	fmt.Printf("BENCHROW service small GET via forward = %.0f req/s, p99 %.1f ms|%.0f req/s, p99 %.1f ms (container port, netns)|%.2f|-|-\n",
		rps(fs), ms(p99(fs)), rps(ds), ms(p99(ds)), rps(fs)/rps(ds))
	fmt.Printf("BENCHROW service 10 MiB GET via forward = %.1f MiB/s, p99 %.0f ms|%.1f MiB/s, p99 %.0f ms (container port, netns)|%.2f|-|-\n",
		mibps(fb), ms(p99(fb)), mibps(db), ms(p99(db)), mibps(fb)/mibps(db))
	if out, err := buyer.cli("cancel", id); err != nil {
		b.Fatalf("cancel: %v: %s", err, out)
	}
}

// BenchmarkServiceFailover: three sellers, a service of 1 and of 2
// replicas, two clients sending requests through the forward (one
// connection each, 50 ms apart); the seller of a replica is killed (kill
// -9). Reported: the requests that failed from the kill until a healthy
// replacement serves (and 2 s more), and the time to that replacement
// (the goal: with 2 replicas, no failure beyond the requests in flight,
// and a replacement within 60 s).
func BenchmarkServiceFailover(b *testing.B) {
	for _, replicas := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			m := newMarket(b)
			var sellers []*daemon
			var boot []string
			for range 3 {
				s := m.daemon(sellerEnv())
				sellers = append(sellers, s)
				boot = append(boot, "--bootstrap", s.bootAddr())
			}
			buyer := m.daemon(buyerEnv, boot...)
			m.fund(buyer.proc, 2_000_000)
			m.waitMarket(buyer, 3)
			args := append(append([]string{"submit", "--json", "--image", busybox(b, b.TempDir())}, serviceFlags...),
				"--replicas", fmt.Sprint(replicas), "--time", "10m", "--", "sh", "-c", httpdScript("192.0.2.1:9"))
			out, err := buyer.cli(args...)
			if err != nil {
				b.Fatalf("submit: %v: %s", err, out)
			}
			id := jsonField(b, out, "id")
			var fwd, victimID string
			waitFor(b, 180*time.Second, "healthy replicas", func() bool {
				s := buyer.job(id).Service
				if s == nil || s.Healthy() != replicas || len(s.Forwards) == 0 {
					return false
				}
				fwd, victimID = s.Forwards[0], s.Running[0].Seller.String()
				return true
			})
			var victim *daemon
			for _, d := range sellers {
				if d.peerID() == victimID {
					victim = d
				}
			}
			client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			var failed, total atomic.Int32
			var killed atomic.Bool
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						resp, err := client.Get("http://" + fwd + "/index.html")
						if err == nil {
							_, err = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
						if killed.Load() {
							total.Add(1)
							if err != nil {
								failed.Add(1)
							}
						}
						if err != nil {
							time.Sleep(50 * time.Millisecond) // a failing forward answers at once
						}
						time.Sleep(50 * time.Millisecond)
					}
				}()
			}
			time.Sleep(2 * time.Second)
			victim.kill()
			killed.Store(true)
			at := time.Now()
			var took time.Duration
			waitFor(b, 180*time.Second, "a healthy replacement", func() bool {
				s := buyer.job(id).Service
				if s.Healthy() < replicas || s.Replacements+s.Contracts <= replicas || runsOn(s, victimID) {
					return false
				}
				took = time.Since(at)
				return true
			})
			time.Sleep(2 * time.Second)
			close(stop)
			wg.Wait()
			b.ReportMetric(float64(failed.Load()), "failed_requests")
			b.ReportMetric(float64(total.Load()), "requests")
			b.ReportMetric(took.Seconds(), "s_to_replacement")
			fmt.Printf("BENCHROW service failover, %d replica(s) = %d of %d requests failed, replacement healthy in %.1f s|-|-|2 replicas: <= 2 in flight, < 60 s|%s\n",
				replicas, failed.Load(), total.Load(), took.Seconds(), map[bool]string{true: "yes", false: "no"}[replicas == 1 || failed.Load() <= 2 && took < time.Minute])
			buyer.cli("cancel", id)
			victim.start() // its leftover container reconciled
		})
	}
}

// BenchmarkServiceIdle: what an idle service costs its seller beyond the
// container: the seller daemon's CPU and RSS over BLACKBOX_BENCH_IDLE
// (60s) with no contract, then over the same window with an idle busybox
// httpd service (heartbeats and payments every 2 s billing interval of
// these tests, a health check every 2 s), and the containerd shim that
// runs the container; per hour.
func BenchmarkServiceIdle(b *testing.B) {
	m := newMarket(b)
	idle := benchEnvDuration(b, "BLACKBOX_BENCH_IDLE", time.Minute)
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 2_000_000)
	m.waitMarket(buyer, 1)
	time.Sleep(10 * time.Second)
	none := measureIdle(b, map[string]*daemon{"seller, no service": seller}, idle)["seller, no service"]
	args := append(append([]string{"submit", "--json", "--image", busybox(b, b.TempDir())}, serviceFlags...), "--time", "30m", "--", "sh", "-c", httpdScript("192.0.2.1:9"))
	out, err := buyer.cli(args...)
	if err != nil {
		b.Fatalf("submit: %v: %s", err, out)
	}
	id := jsonField(b, out, "id")
	var cid string
	waitFor(b, 120*time.Second, "the service healthy", func() bool {
		s := buyer.job(id).Service
		if s == nil || s.Healthy() != 1 {
			return false
		}
		cid = s.Running[0].ContractID
		return true
	})
	time.Sleep(10 * time.Second)
	shim := shimPid(b, m.containerPid(cid))
	shimCPU := procCPUSeconds(b, shim)
	began := time.Now()
	with := measureIdle(b, map[string]*daemon{"seller, idle service": seller}, idle)["seller, idle service"]
	window := time.Since(began).Seconds()
	shimPct := 100 * (procCPUSeconds(b, shim) - shimCPU) / window
	shimMiB := procKiB(b, shim, "VmRSS") / 1024
	perHour := func(pct float64) float64 { return pct / 100 * 3600 }
	b.ReportMetric(perHour(with.cpuPct-none.cpuPct), "daemon_cpu_s/h")
	b.ReportMetric(with.rssMiB-none.rssMiB, "daemon_rss_MiB")
	b.ReportMetric(perHour(shimPct), "shim_cpu_s/h")
	b.ReportMetric(shimMiB, "shim_rss_MiB")
	fmt.Printf("BENCHROW idle service, seller beyond the container = %.1f CPU s/h, %+.1f MiB RSS (daemon); shim %.1f CPU s/h, %.1f MiB|daemon without it: %.1f CPU s/h, %.1f MiB|-|-|-\n",
		perHour(with.cpuPct-none.cpuPct), with.rssMiB-none.rssMiB, perHour(shimPct), shimMiB, perHour(none.cpuPct), none.rssMiB)
	buyer.cli("cancel", id)
}

// shimPid is the parent of the container's init process: its containerd
// shim (a subreaper).
func shimPid(b *testing.B, pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(raw), ") ")
	f := strings.Fields(rest) // f[1] is field 4, the parent
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	return ppid
}

// jsonField is a string field of a JSON object.
func jsonField(b *testing.B, out, name string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		b.Fatalf("%q: %v", out, err)
	}
	v, _ := m[name].(string)
	if v == "" {
		b.Fatalf("no %s in %s", name, out)
	}
	return v
}
