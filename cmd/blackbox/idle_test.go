//go:build integration

package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkIdle: what a node costs its machine when nothing happens.
//
// Start: a fully configured seller (btcd regtest, containerd sandbox,
// wallet passphrase) starting on a fresh data dir — it creates its wallet
// — from exec until its API answers (Start returned: wallet open and
// synced, engines up), and its peak RSS (VmHWM) by then; BLACKBOX_BENCH_STARTS
// rounds (3), the baseline binary (BLACKBOX_BENCH_BASELINE_BIN, what
// `make bench` builds from BASELINE_REF) and this one alternating, medians
// reported; with BLACKBOX_BENCH_RELEASE_BIN (make release's build of this
// code) too. Then a restart of each on its existing wallet.
//
// Idle: those two sellers and an unconfigured node of each binary (no
// config at all), left BLACKBOX_BENCH_SETTLE (10s) to settle, then
// BLACKBOX_BENCH_IDLE (60s) on a quiet chain (no blocks): CPU is
// utime+stime from /proc/PID/stat over the window (share of one core),
// RSS is VmRSS at its end, peak VmHWM.
//
// It prints BENCHROW lines for bench.sh's table (goals of issue 14: start
// peak < 120 MiB and start < 2 s; idle < 1% of a core and < 80 MiB).
func BenchmarkIdle(b *testing.B) {
	m := newMarketMining(b, 0)
	idle := benchEnvDuration(b, "BLACKBOX_BENCH_IDLE", time.Minute)
	settle := benchEnvDuration(b, "BLACKBOX_BENCH_SETTLE", 10*time.Second)
	rounds := benchEnvCount(b, "BLACKBOX_BENCH_STARTS", 3, 1)
	type variant struct {
		name string
		m    *market
		seller,
		bare *daemon
		startS, cpuS, peakMiB []float64
	}
	vs := []*variant{{name: "this", m: m}}
	if bin := os.Getenv("BLACKBOX_BENCH_BASELINE_BIN"); bin != "" {
		base := *m
		base.bin = bin
		vs = append([]*variant{{name: "baseline", m: &base}}, vs...)
	} else {
		b.Log("no BLACKBOX_BENCH_BASELINE_BIN: this binary only, no ratios")
	}
	var release *variant // the same code built by make release
	if bin := os.Getenv("BLACKBOX_BENCH_RELEASE_BIN"); bin != "" {
		rm := *m
		rm.bin = bin
		release = &variant{name: "release", m: &rm}
		vs = append(vs, release)
	}

	seller := func(v *variant) *daemon {
		d := v.m.daemon(sellerEnv())
		pid := d.cmd.Process.Pid
		v.startS = append(v.startS, d.ready.Seconds())
		v.cpuS = append(v.cpuS, procCPUSeconds(b, pid))
		v.peakMiB = append(v.peakMiB, procKiB(b, pid, "VmHWM")/1024)
		if _, err := d.cli("wallet", "address"); err != nil {
			b.Fatalf("%s seller started without its wallet: %v\n%s", v.name, err, tail(d.logs.String(), 30))
		}
		return d
	}
	for r := range rounds {
		order := slices.Clone(vs)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, v := range order {
			d := seller(v)
			b.Logf("%s seller, fresh wallet, round %d: started in %.2fs (%.2fs of CPU), peak RSS %.0f MiB", v.name, r+1, d.ready.Seconds(), v.cpuS[len(v.cpuS)-1], v.peakMiB[len(v.peakMiB)-1])
			if r < rounds-1 {
				d.stop()
			} else {
				v.seller = d
			}
		}
	}
	restart := map[string][2]float64{}
	for _, v := range vs {
		v.seller.stop()
		v.seller.start()
		restart[v.name] = [2]float64{v.seller.ready.Seconds(), procKiB(b, v.seller.cmd.Process.Pid, "VmHWM") / 1024}
		b.Logf("%s seller, existing wallet: started in %.2fs, peak RSS %.0f MiB", v.name, restart[v.name][0], restart[v.name][1])
		// An unconfigured node: no environment of the market's at all.
		bare := &market{t: b, bin: v.m.bin}
		v.bare = bare.daemon(nil)
	}

	time.Sleep(settle)
	procs := map[string]*daemon{}
	for _, v := range vs {
		procs[v.name+" seller"] = v.seller
		procs[v.name+" unconfigured"] = v.bare
	}
	figs := measureIdle(b, procs, idle)

	var cur, base *variant
	for _, v := range vs {
		switch v.name {
		case "this":
			cur = v
		case "baseline":
			base = v
		}
	}
	row := func(figure string, now, was float64, unit string, goal float64) {
		baseline, ratio := "-", "-"
		if base != nil {
			baseline = fmt.Sprintf("%.2f %s", was, unit)
			if was > 0 { // an idle CPU share may round to 0 ticks
				ratio = fmt.Sprintf("%.2f", now/was)
			}
		}
		met := "no"
		if now < goal {
			met = "yes"
		}
		fmt.Printf("BENCHROW %s = %.2f %s|%s|%s|< %g %s|%s\n", figure, now, unit, baseline, ratio, goal, unit, met)
	}
	baseOr := func(f func(*variant) float64) float64 {
		if base == nil {
			return 0
		}
		return f(base)
	}
	row("seller start, fresh wallet (median)", median(cur.startS), baseOr(func(v *variant) float64 { return median(v.startS) }), "s", 2)
	row("seller start peak RSS, fresh wallet (median)", median(cur.peakMiB), baseOr(func(v *variant) float64 { return median(v.peakMiB) }), "MiB", 120)
	row("seller restart, existing wallet", restart[cur.name][0], restart["baseline"][0], "s", 2)
	row("seller restart peak RSS", restart[cur.name][1], restart["baseline"][1], "MiB", 120)
	for _, who := range []string{"seller", "unconfigured"} {
		now, was := figs[cur.name+" "+who], figs["baseline "+who]
		row(fmt.Sprintf("%s node idle CPU (%.0fs)", who, idle.Seconds()), now.cpuPct, was.cpuPct, "% core", 1)
		row(who+" node idle RSS", now.rssMiB, was.rssMiB, "MiB", 80)
	}
	if release != nil {
		// The release build of the same code starts as fast: compared in
		// CPU time (utime+stime until the API answers), which a busy
		// machine disturbs much less than the wall clock.
		now, was := median(release.cpuS), median(cur.cpuS)
		met := "no"
		if now <= 1.1*was {
			met = "yes"
		}
		fmt.Printf("BENCHROW release build seller start CPU, fresh wallet (median) = %.2f s|%.2f s (make build)|%.2f|<= 1.1 x make build|%s\n", now, was, now/was, met)
	}
	b.ReportMetric(median(cur.startS), "start_s")
	b.ReportMetric(median(cur.peakMiB), "start_peak_MiB")
	b.ReportMetric(figs[cur.name+" seller"].cpuPct, "seller_idle_%cpu")
	b.ReportMetric(figs[cur.name+" seller"].rssMiB, "seller_idle_MiB")
	b.ReportMetric(figs[cur.name+" unconfigured"].cpuPct, "bare_idle_%cpu")
	b.ReportMetric(figs[cur.name+" unconfigured"].rssMiB, "bare_idle_MiB")
}

func benchEnvDuration(b *testing.B, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		b.Fatalf("%s=%q: want a duration (60s)", name, s)
	}
	return d
}

// benchEnvCount is the count in environment variable name, def when
// unset; a value that is not a whole number >= least fails the benchmark.
func benchEnvCount(b *testing.B, name string, def, least int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < least {
		b.Fatalf("%s=%q: want a count >= %d", name, s, least)
	}
	return n
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// procKiB reads a "VmX:  N kB" line of /proc/PID/status.
// idleFig is what a process costs while idle: its share of a core over the
// window, and its resident and peak memory at the end.
type idleFig struct{ cpuPct, rssMiB, hwmMiB float64 }

// measureIdle measures each of procs over idle, from /proc.
func measureIdle(b *testing.B, procs map[string]*daemon, idle time.Duration) map[string]idleFig {
	before := map[string]float64{}
	for name, d := range procs {
		before[name] = procCPUSeconds(b, d.cmd.Process.Pid)
	}
	began := time.Now()
	time.Sleep(idle)
	window := time.Since(began).Seconds()
	figs := map[string]idleFig{}
	for name, d := range procs {
		pid := d.cmd.Process.Pid
		figs[name] = idleFig{
			cpuPct: 100 * (procCPUSeconds(b, pid) - before[name]) / window,
			rssMiB: procKiB(b, pid, "VmRSS") / 1024,
			hwmMiB: procKiB(b, pid, "VmHWM") / 1024,
		}
		b.Logf("%s, idle %.0fs: CPU %.2f%% of a core, RSS %.1f MiB, peak %.1f MiB", name, window, figs[name].cpuPct, figs[name].rssMiB, figs[name].hwmMiB)
	}
	return figs
}

func procKiB(b *testing.B, pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == field {
			n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatalf("/proc/%d/status %s: %q", pid, field, v)
			}
			return n
		}
	}
	b.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// procCPUSeconds is utime+stime of /proc/PID/stat, in seconds (USER_HZ is
// 100 on Linux whatever the kernel's HZ).
func procCPUSeconds(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces: count from after it.
	_, rest, _ := strings.Cut(string(raw), ") ")
	f := strings.Fields(rest) // f[0] is field 3 (state)
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	return (ut + st) / 100
}
