package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
)

// recordingBackend is a daemon that records what the CLI asked of it. Only
// the methods the commands under test call are implemented.
type recordingBackend struct {
	api.Backend
	submitted []contract.Request
	markets   []api.MarketRequest
	offers    []api.Offer
}

func (b *recordingBackend) Submit(_ context.Context, req contract.Request) (string, error) {
	b.submitted = append(b.submitted, req)
	return "job-" + strconv.Itoa(len(b.submitted)), nil
}

// WalletBalance says payments are off: submit then leaves the funding
// check to the daemon.
func (b *recordingBackend) WalletBalance(context.Context, int32) (api.Balance, error) {
	return api.Balance{}, fmt.Errorf("%w: payments not configured", api.ErrUnavailable)
}

func (b *recordingBackend) Market(_ context.Context, req api.MarketRequest) ([]api.Offer, error) {
	b.markets = append(b.markets, req)
	return append([]api.Offer(nil), b.offers...), nil
}

// fakeDaemon serves b on a fresh data dir's socket and returns the data dir.
func fakeDaemon(t *testing.T, b api.Backend) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "bbcli") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv, err := api.Listen(dir, b, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return dir
}

// TestSizeFlagsOneMeaning: every size flag reads "512Mi" as 2^29 bytes and
// "512M" as 512×10^6 (issue 9, bug 2: submit used 10^6 and sandbox run 2^20
// for the same "512M").
func TestSizeFlagsOneMeaning(t *testing.T) {
	b := &recordingBackend{}
	data := fakeDaemon(t, b)
	image := tinyImage(t)
	for _, tt := range []struct {
		flag string
		want uint64
	}{{"512Mi", 512 << 20}, {"512MiB", 512 << 20}, {"512M", 512e6}, {"512m", 512e6}, {"512MB", 512e6}} {
		code, _, errOut := run(t, "--data-dir", data, "submit", "-d", "--image", image, "--memory", tt.flag, "--disk", tt.flag, "--", "true")
		if code != 0 {
			t.Fatalf("submit --memory %s: exit %d: %s", tt.flag, code, errOut)
		}
		got := b.submitted[len(b.submitted)-1].Resources
		if got.MemoryBytes != tt.want || got.DiskBytes != tt.want {
			t.Errorf("submit --memory/--disk %s = %d/%d bytes, want %d", tt.flag, got.MemoryBytes, got.DiskBytes, tt.want)
		}
		code, _, errOut = run(t, "--data-dir", data, "market", "--memory", tt.flag, "--disk", tt.flag)
		if code != 0 {
			t.Fatalf("market --memory %s: exit %d: %s", tt.flag, code, errOut)
		}
		f := b.markets[len(b.markets)-1].Filter
		if f.Min.MemoryBytes != tt.want || f.Min.DiskBytes != tt.want {
			t.Errorf("market --memory/--disk %s = %d/%d bytes, want %d", tt.flag, f.Min.MemoryBytes, f.Min.DiskBytes, tt.want)
		}
	}
	for _, cmd := range [][]string{{"submit", "--help"}, {"market", "--help"}, {"sandbox", "run", "--help"}} {
		_, out, _ := run(t, cmd...)
		if !strings.Contains(out, "Mi") || !strings.Contains(out, "10^6") {
			t.Errorf("%s does not say what a size is:\n%s", strings.Join(cmd, " "), out)
		}
	}
}

// TestMarketFlagsMeanSubmitFlags: market's --cpus (old spelling --cpu still
// parses), --time and --max-price mean what submit's do: --max-price is the
// most a whole job may cost, start fee included, not a price per hour
// (issue 9, bug 15).
func TestMarketFlagsMeanSubmitFlags(t *testing.T) {
	b := &recordingBackend{offers: []api.Offer{
		// 600 sat/core-h, no start fee: a 10-minute job of one core is 100 sat.
		{Seller: "hourly-dear", Prices: offer.Prices{CoreHour: 600_000}, PricePerHour: 600, BillingInterval: 60},
		// 60 sat/core-h and a 200 sat start fee: the same job is 210 sat.
		{Seller: "start-fee", Prices: offer.Prices{CoreHour: 60_000, StartFee: 200_000}, PricePerHour: 60, BillingInterval: 60},
		// Contracts of at most 5 minutes cannot run a 10-minute job.
		{Seller: "short", Prices: offer.Prices{CoreHour: 1000}, PricePerHour: 1, BillingInterval: 60, MaxDuration: 300},
	}}
	data := fakeDaemon(t, b)
	list := func(args ...string) []api.Offer {
		t.Helper()
		code, out, errOut := run(t, append([]string{"--data-dir", data, "market", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("market %v: exit %d: %s", args, code, errOut)
		}
		var offers []api.Offer
		if err := json.Unmarshal([]byte(out), &offers); err != nil {
			t.Fatalf("market %v: %v: %q", args, err, out)
		}
		return offers
	}
	sellers := func(offers []api.Offer) string {
		var s []string
		for _, o := range offers {
			s = append(s, fmt.Sprintf("%s=%d", o.Seller, o.PricePerJob))
		}
		return strings.Join(s, " ")
	}
	if got := sellers(list("--cpus", "1", "--time", "10m")); got != "hourly-dear=100 start-fee=210" {
		t.Errorf("market --cpus 1 --time 10m: %s", got)
	}
	if got := sellers(list("--cpu", "1", "--time", "10m", "--max-price", "150")); got != "hourly-dear=100" {
		t.Errorf("market --cpu 1 --time 10m --max-price 150: %s", got)
	}
	if f := b.markets[len(b.markets)-1].Filter; f.Min.CPUMillis != 1000 || f.MaxPrice != 0 {
		t.Errorf("--cpu alias / per-job cap reached the daemon as %+v", f)
	}
	list("--max-price-per-hour", "100")
	if f := b.markets[len(b.markets)-1].Filter; f.MaxPrice != 100 {
		t.Errorf("--max-price-per-hour 100 reached the daemon as %+v", f)
	}
	// sandbox run reads --cpus as submit and market do (it took only floats).
	if code, _, errOut := run(t, "--data-dir", data, "sandbox", "run", "--image", "x", "--cpus", "lots", "--", "true"); code != 1 || !strings.Contains(errOut, "--cpus") {
		t.Errorf("sandbox run --cpus lots: exit %d: %s", code, errOut)
	}
	_, out, _ := run(t, "market", "--help")
	if strings.Contains(out, "--cpu ") || !strings.Contains(out, "--cpus") {
		t.Errorf("market --help should show --cpus only:\n%s", out)
	}
}

// tinyImage writes the smallest archive submit accepts before it asks the
// daemon (a docker archive with a manifest): the fake daemon runs nothing.
func tinyImage(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	manifest := []byte(`[{"Config":"config.json","Layers":[]}]`)
	if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(manifest)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(manifest)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(image, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return image
}
