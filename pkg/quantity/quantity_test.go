package quantity

import "testing"

// parseCase is one input to a parser and its expected result.
type parseCase struct {
	in   string
	want int64
	bad  bool
}

func checkParse(t *testing.T, name string, parse func(string) (int64, error), tests []parseCase) {
	t.Helper()
	for _, tt := range tests {
		got, err := parse(tt.in)
		switch {
		case tt.bad && err == nil:
			t.Errorf("%s(%q) = %d, want error", name, tt.in, got)
		case !tt.bad && (err != nil || got != tt.want):
			t.Errorf("%s(%q) = %d, %v; want %d", name, tt.in, got, err, tt.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	checkParse(t, "ParseSize", ParseSize, []parseCase{
		{in: "2GiB", want: 2 << 30},
		{in: "512MiB", want: 512 << 20},
		{in: "1.5GiB", want: 3 << 29},
		{in: "1.5 GiB", want: 3 << 29},
		{in: "2gib", want: 2 << 30},
		// One meaning for M and Mi, whatever the case or spelling (issue 9, bug 2).
		{in: "512M", want: 512e6},
		{in: "512m", want: 512e6},
		{in: "512MB", want: 512e6},
		{in: "512mb", want: 512e6},
		{in: "512Mi", want: 512 << 20},
		{in: "512mi", want: 512 << 20},
		{in: "512MiB", want: 512 << 20},
		{in: "512mib", want: 512 << 20},
		{in: "1k", want: 1000},
		{in: "1Ki", want: 1024},
		{in: "1.0GiB", want: 1 << 30},
		{in: "2Gi", want: 2 << 30},
		{in: "100MB", want: 100e6},
		{in: "2G", want: 2e9},
		{in: "10KiB", want: 10 << 10},
		{in: "1TiB", want: 1 << 40},
		{in: "1048576", want: 1 << 20},
		{in: "0", want: 0},
		{in: "7B", want: 7},
		{in: "  3MiB ", want: 3 << 20},
		{in: "0.5B", want: 0}, // rounds down
		{in: "", bad: true},
		{in: "-1GiB", bad: true},
		{in: "+1GiB", bad: true},
		{in: "GiB", bad: true},
		{in: "1.2.3GiB", bad: true},
		{in: "1e9", bad: true},
		{in: "0x10", bad: true},
		{in: "inf", bad: true},
		{in: "NaN", bad: true},
		{in: "2 GiBs", bad: true},
		{in: "2 lots", bad: true},
		{in: "99999999PiB", bad: true}, // overflows int64
		{in: ".", bad: true},
	})
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0B"}, {512, "512B"}, {1024, "1KiB"}, {1536, "1.5KiB"},
		{2 << 30, "2GiB"}, {3 << 29, "1.5GiB"}, {256 << 20, "256MiB"}, {1 << 40, "1TiB"},
	}
	for _, tt := range tests {
		got := FormatSize(tt.in)
		if got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := ParseSize(got)
		if err != nil || back != tt.in {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", tt.in, back, err)
		}
	}
}

func TestParseCPU(t *testing.T) {
	checkParse(t, "ParseCPU", ParseCPU, []parseCase{
		{in: "2", want: 2000},
		{in: "1.5", want: 1500},
		{in: "0.25", want: 250},
		{in: "500m", want: 500},
		{in: "0", want: 0},
		{in: "0.001", want: 1},
		{in: "0.0001", bad: true},
		{in: "1.5m", bad: true},
		{in: "-1", bad: true},
		{in: "two", bad: true},
		{in: "2c", bad: true},
		{in: "", bad: true},
	})
	for in, want := range map[int64]string{2000: "2", 1500: "1.5", 250: "0.25", 1: "0.001", 0: "0"} {
		if got := FormatCPU(in); got != want {
			t.Errorf("FormatCPU(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestParseBandwidth(t *testing.T) {
	checkParse(t, "ParseBandwidth", ParseBandwidth, []parseCase{
		{in: "100Mbit", want: 100e6},
		{in: "100Mbps", want: 100e6},
		{in: "1Gbit/s", want: 1e9},
		{in: "1.5Gbit", want: 15e8},
		{in: "500kbit", want: 500e3},
		{in: "20000", want: 20000},
		{in: "64bit", want: 64},
		{in: "10MB/s", bad: true}, // bytes, not bits
		{in: "10MBps", bad: true},
		{in: "10Mfoo", bad: true},
		{in: "-5Mbit", bad: true},
		{in: "", bad: true},
	})
	if got := FormatBandwidth(100e6); got != "100Mbit/s" {
		t.Errorf("FormatBandwidth(100e6) = %q", got)
	}
}
