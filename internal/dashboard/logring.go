package dashboard

import (
	"log/slog"
	"strings"
	"sync"
)

// LogRing keeps the node's last log lines for the dashboard's log tail. It
// is an io.Writer for a slog text handler: each Write is one record.
type LogRing struct {
	mu    sync.Mutex
	lines []LogLine // a ring of cap size, oldest at start
	start int
	next  uint64
}

// LogLine is one log record as text, numbered from 1 in order of arrival.
type LogLine struct {
	Seq  uint64 `json:"seq"`
	Text string `json:"text"`
}

// NewLogRing keeps the last size lines.
func NewLogRing(size int) *LogRing {
	return &LogRing{lines: make([]LogLine, 0, max(size, 1))}
}

// Write adds p (one or more lines) to the ring. It never fails.
func (r *LogRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		r.next++
		l := LogLine{Seq: r.next, Text: line}
		if len(r.lines) < cap(r.lines) {
			r.lines = append(r.lines, l)
			continue
		}
		r.lines[r.start] = l
		r.start = (r.start + 1) % len(r.lines)
	}
	return len(p), nil
}

// After returns the kept lines numbered after seq, oldest first.
func (r *LogRing) After(seq uint64) []LogLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]LogLine, 0, len(r.lines))
	for i := range r.lines {
		l := r.lines[(r.start+i)%len(r.lines)]
		if l.Seq > seq {
			out = append(out, l)
		}
	}
	return out
}

// Tee returns a logger that logs to inner as before and also keeps every
// record at info level or above in the ring, whatever inner's level.
func (r *LogRing) Tee(inner slog.Handler) slog.Handler {
	return slog.NewMultiHandler(inner, slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
