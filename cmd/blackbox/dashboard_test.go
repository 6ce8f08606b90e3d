//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/chromedp/chromedp"
	"go.yaml.in/yaml/v3"
)

// chromium is Debian's chromium (BLACKBOX_TEST_CHROMIUM overrides the
// path). Outside CI a machine without it skips, saying so; in CI the test
// fails instead.
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv("BLACKBOX_TEST_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("chromium: %v (deploy/dev/deps.sh installs it)", err)
		}
		t.Skipf("the dashboard test drives a real browser: %v (apt-get install chromium)", err)
	}
	return path
}

// screenshotDir is the build dir's screenshots/ (build/screenshots).
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := "../../build/screenshots"
	if b := os.Getenv("BLACKBOX_TEST_BIN"); b != "" {
		dir = filepath.Join(filepath.Dir(filepath.Dir(b)), "screenshots")
	}
	dir, _ = filepath.Abs(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func saveScreenshot(t *testing.T, name string, png []byte) {
	t.Helper()
	path := filepath.Join(screenshotDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// chartInk measures a chart's screenshot: the standard deviation of its
// pixels' brightness (0 for a blank box) and how many pixels are close to
// colour c (the earnings bars' fill).
func chartInk(t *testing.T, b []byte, c [3]int) (stddev float64, colored int) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode screenshot: %v", err)
	}
	var sum, sum2, n float64
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			l := 0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bl)
			sum, sum2, n = sum+l, sum2+l*l, n+1
			if abs(int(r)-c[0]) < 12 && abs(int(g)-c[1]) < 12 && abs(int(bl)-c[2]) < 12 {
				colored++
			}
		}
	}
	mean := sum / n
	return math.Sqrt(sum2/n - mean*mean), colored
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// TestDashboardInBrowser runs a job through a seller, then drives Debian's
// chromium headless against that seller's dashboard: the page loads with no
// console error, shows the contract's earnings, draws the charts (their
// screenshots are not blank, and the earnings chart has its bar colour),
// refuses a negative price with a message at the field, and a price
// changed in the form is what `blackbox config show` prints, what the
// config file holds and what the next `blackbox offer --json` says.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	m := newMarket(t)
	work := t.TempDir()
	port := freePort(t)
	addr, _ := payoutAddress(t)
	seller := m.daemon(sellerEnv("BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr), "--dashboard-addr", "127.0.0.1:"+port)
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr(), "--dashboard-addr=")
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)

	j := submit(t, buyer, busybox(t, work), filepath.Join(work, "out"), jobFlags, "sh", "-c", "echo hello")
	if j.State != contract.JobDone || j.Paid <= 0 {
		t.Fatalf("job %s: %s, paid %d: %s\n%s", j.ID, j.State, j.Paid, j.Error, buyer.logs.String())
	}
	waitFor(t, 30*time.Second, "the seller to settle the contract", func() bool {
		r := seller.contractRec(j.ContractID)
		return r != nil && r.State == contract.StateSettled && r.Paid == j.Paid
	})
	// The utilisation chart draws the history's capacity samples (one every
	// 30 s): wait for the first.
	var hist api.Earnings
	waitFor(t, 90*time.Second, "the seller's history to sample its capacity", func() bool {
		e, err := seller.api().Earnings(context.Background(), 24*time.Hour)
		for _, b := range e.Buckets {
			if err == nil && b.SpareMilliCPU+b.SoldMilliCPU+b.ReservedMilliCPU > 0 {
				hist = e
				return true
			}
		}
		return false
	})
	before, err := seller.api().Offer(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	// The browser, with every console message of level warning or error,
	// uncaught exception and browser log error collected.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1400, 2400), chromedp.UserDataDir(t.TempDir()))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", browser, err)
	}
	var mu sync.Mutex
	var consoleErrors []string
	messages := chromedp.Console(bctx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for msg, err := range messages {
			if err != nil {
				return
			}
			switch msg.Type {
			case chromedp.ConsoleWarning, chromedp.ConsoleError, chromedp.ConsoleException, "assert":
				mu.Lock()
				consoleErrors = append(consoleErrors, fmt.Sprintf("%s: %s (%s:%d)", msg.Type, msg.Text, msg.URL, msg.Line))
				mu.Unlock()
			}
		}
	}()
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	shot := func(name string, a chromedp.Action[[]byte]) []byte {
		t.Helper()
		b, err := chromedp.Run(bctx, a)
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		saveScreenshot(t, name, b)
		return b
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	url := "http://127.0.0.1:" + port + "/"
	row := fmt.Sprintf(`#contracts tr[data-id=%q]`, j.ContractID)
	start := time.Now()
	if err := chromedp.Do(bctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(css(row)),
		chromedp.WaitVisible(css("#chart-earnings rect.bar")),
	); err != nil {
		t.Fatalf("dashboard at %s: %v\n%s", url, err, tail(seller.logs.String(), 40))
	}
	t.Logf("dashboard loaded and showed contract %s in %s", j.ContractID, time.Since(start).Round(time.Millisecond))
	paid, today := text(row+" td.paid"), text("#earned-today")
	shot("dashboard.png", chromedp.FullScreenshot(100))
	earningsChart := shot("dashboard-earnings-chart.png", chromedp.Screenshot(css("#chart-earnings")))
	utilChart := shot("dashboard-utilisation-chart.png", chromedp.Screenshot(css("#chart-util")))
	if digits(paid) != strconv.FormatInt(j.Paid, 10) {
		t.Errorf("the page shows the contract's earnings as %q, want %d sat", paid, j.Paid)
	}
	if digits(today) != strconv.FormatInt(hist.Today.NetSat, 10) || hist.Today.NetSat < j.Paid {
		t.Errorf("earned in the last 24 h shows %q; the history says %d net after a paid job of %d sats", today, hist.Today.NetSat, j.Paid)
	}
	// The page says what the node's health says.
	if h, err := seller.api().Health(context.Background()); err != nil {
		t.Errorf("health: %v", err)
	} else if want := map[bool]string{true: "yes", false: "no"}[h.CanEarn]; text("#can-earn") != want {
		t.Errorf("the page says can earn %q, the node's health %q (%v)", text("#can-earn"), want, h.Reasons)
	}
	sd, bars := chartInk(t, earningsChart, [3]int{0x2b, 0x6c, 0xb0})
	t.Logf("earnings chart: brightness std dev %.1f, %d bar pixels; the page says %q earned in 24 h", sd, bars, today)
	if sd < 3 || bars == 0 {
		t.Errorf("the earnings chart looks blank: std dev %.1f, %d bar pixels", sd, bars)
	}
	sd, spare := chartInk(t, utilChart, [3]int{0x9c, 0xc9, 0xad})
	t.Logf("utilisation chart: brightness std dev %.1f, %d spare-capacity pixels", sd, spare)
	if sd < 3 || spare == 0 {
		t.Errorf("the utilisation chart looks blank: std dev %.1f, %d spare-capacity pixels", sd, spare)
	}

	// Loading the page and drawing it logged nothing.
	mu.Lock()
	if len(consoleErrors) > 0 {
		t.Errorf("the browser reported while loading the page:\n%s", strings.Join(consoleErrors, "\n"))
	}
	consoleErrors = nil
	mu.Unlock()

	// A negative price is refused at the field, and nothing changes (the
	// browser logs the refusal's 400 once: that is the only message
	// expected from here on).
	price := `#policy input[name="pricing.core_hour"]`
	typeInto := func(sel, text string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(
			chromedp.Click(css(sel)),
			chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).select()`, sel)),
			chromedp.SendKeys(css(sel), text),
		)
	}
	fieldErr := `[data-error-for="pricing.core_hour"]`
	if err := chromedp.Do(bctx,
		typeInto(price, "-5"),
		chromedp.Click(css("#policy-save")),
		chromedp.WaitVisible(css(fieldErr)),
	); err != nil {
		t.Fatalf("refusing a negative price: %v", err)
	}
	t.Logf("the page says about core_hour -5: %s", text(fieldErr))
	if v, err := seller.api().Config(context.Background()); err != nil || v.Policy.Pricing.CoreHour != 360000 {
		t.Fatalf("after a refused change the daemon's price is %v (%v), want the old 360000", v.Policy.Pricing.CoreHour, err)
	}
	shot("dashboard-policy-refused.png", chromedp.Screenshot(css("#policy")))

	// A good price is applied, saved and offered.
	if err := chromedp.Do(bctx,
		typeInto(price, "123456.5"),
		chromedp.Click(css("#policy-save")),
		chromedp.WaitVisible(css("#policy-result.ok")),
	); err != nil {
		t.Fatalf("changing the price: %v\n%s", err, tail(seller.logs.String(), 20))
	}
	t.Logf("the page says: %s", text("#policy-result"))
	shot("dashboard-policy-applied.png", chromedp.Screenshot(css("#policy")))

	out, err := seller.cli("config", "show")
	if err != nil {
		t.Fatalf("config show: %v: %s", err, out)
	}
	var shown struct {
		Meter struct {
			Pricing struct {
				CoreHour float64 `yaml:"core_hour"`
			} `yaml:"pricing"`
		} `yaml:"meter"`
	}
	if err := yaml.Unmarshal([]byte(out), &shown); err != nil || shown.Meter.Pricing.CoreHour != 123456.5 {
		t.Fatalf("config show: meter.pricing.core_hour %v (%v), want 123456.5\n%s", shown.Meter.Pricing.CoreHour, err, out)
	}
	if !strings.Contains(out, "# from: the running daemon") {
		t.Errorf("config show does not say it is the running daemon's:\n%s", head(out, 5))
	}
	file, err := os.ReadFile(filepath.Join(seller.dir, "blackbox.yaml"))
	if err != nil || !strings.Contains(string(file), "core_hour: 123456.5") {
		t.Errorf("the config file does not hold the new price (%v)", err)
	}
	out, err = seller.cli("offer", "--json")
	if err != nil {
		t.Fatalf("offer --json: %v: %s", err, out)
	}
	var o api.Offer
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatal(err)
	}
	if o.Prices.CoreHour != 123456500 || o.Seq <= before.Seq {
		t.Fatalf("the next offer asks %d msat per core-hour (seq %d, before %d), want 123456500 in a new offer", o.Prices.CoreHour, o.Seq, before.Seq)
	}

	cancelBrowser()
	<-consoleDone
	mu.Lock()
	defer mu.Unlock()
	var unexpected []string
	refusals := 0
	for _, e := range consoleErrors {
		if strings.Contains(e, "status of 400") && strings.Contains(e, "/api/policy") {
			refusals++
			continue
		}
		unexpected = append(unexpected, e)
	}
	if len(unexpected) > 0 || refusals != 1 {
		t.Errorf("the browser reported (%d refusals of the bad price, want 1):\n%s", refusals, strings.Join(unexpected, "\n"))
	}
}

// digits keeps the digits of s ("4,200 sat" → "4200").
func digits(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}

func head(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
