package cli

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// table writes the human lists (jobs, contracts, channels, market,
// reputation, trust) and the key/value views (status, job, offer): columns
// padded to their widest cell and separated by two spaces, no padding after
// the last cell of a line, so no line ends in spaces. Rows come from row, or
// from Write as tab-separated lines (as to a text/tabwriter, which it
// replaces: that one pads empty trailing cells).
// Cells are sanitised: a control character (an ANSI escape in a seller's
// reason, a newline in a command) is shown as a visible \x.. escape, so that
// nothing a peer sends can colour, move or clear the user's terminal and a
// row stays one line. blackbox itself never writes ANSI codes.
type table struct {
	w       io.Writer
	rows    [][]string
	partial []byte // a line written without its newline yet
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{w: w}
	if len(header) > 0 {
		t.rows = append(t.rows, header)
	}
	return t
}

// row adds one line; cells may be any value, formatted with %v.
func (t *table) row(cells ...any) {
	r := make([]string, len(cells))
	for i, c := range cells {
		r[i] = cleanCell(fmt.Sprint(c))
	}
	t.rows = append(t.rows, r)
}

// Write adds the complete lines of p, cells separated by tabs.
func (t *table) Write(p []byte) (int, error) {
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		t.addLine(string(t.partial[:i]))
		t.partial = t.partial[i+1:]
	}
}

func (t *table) addLine(line string) {
	var cells []any
	for _, c := range strings.Split(line, "\t") {
		cells = append(cells, c)
	}
	t.row(cells...)
}

// Flush writes the table.
func (t *table) Flush() error {
	if len(t.partial) > 0 {
		t.addLine(string(t.partial))
		t.partial = nil
	}
	var width []int
	for _, r := range t.rows {
		for i, c := range r[:max(len(r)-1, 0)] { // a last cell is not padded
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range t.rows {
		var line strings.Builder
		for i, c := range r {
			line.WriteString(c)
			if i < len(r)-1 {
				line.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)+2))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
	}
	t.rows = nil
	_, err := io.WriteString(t.w, b.String())
	return err
}

// cleanCell replaces control characters and invalid UTF-8 with visible
// escapes.
func cleanCell(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
		s = s[n:]
	}
	return b.String()
}

// ago says how long before now t was, as people say it: "just now",
// "42 s ago", "3 min ago", "2 h ago", "5 d ago"; a time in the future is
// "in 3 min"; the zero time is "-". Beyond 60 days it is the date.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < 5*time.Second:
		return "just now"
	case d < time.Minute:
		s = fmt.Sprintf("%d s", int(d/time.Second))
	case d < time.Hour:
		s = fmt.Sprintf("%d min", int(d/time.Minute))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%d h", int(d/time.Hour))
	case d < 60*24*time.Hour:
		s = fmt.Sprintf("%d d", int(d/(24*time.Hour)))
	default:
		return t.Local().Format(time.DateOnly)
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

// sats formats an amount of satoshis with thousands separators and the unit:
// "1,234 sat", "-50 sat".
func sats(n int64) string {
	return groupThousands(n) + " sat"
}

func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
