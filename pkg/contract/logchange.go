package contract

import (
	"log/slog"
	"sync"
)

// changeLog picks the level of a message that repeats: info the first
// time a key is seen and whenever its value changes, debug while the same
// value repeats. A buyer retries a busy seller every two seconds for
// minutes (busyRetry, BusyWait); each refusal is logged once per change of
// reason on both sides, not thirty times.
type changeLog struct {
	mu   sync.Mutex
	last map[string]string
}

// maxChangeKeys bounds the memory a stream of new peers can take: past it
// the map starts again (some messages are then logged at info once more).
const maxChangeKeys = 4096

// level returns slog.LevelInfo when key's value is new or changed and
// slog.LevelDebug when it repeats, and remembers value.
func (c *changeLog) level(key, value string) slog.Level {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.last[key]; ok && v == value {
		return slog.LevelDebug
	}
	if c.last == nil || len(c.last) >= maxChangeKeys {
		c.last = map[string]string{}
	}
	c.last[key] = value
	return slog.LevelInfo
}

// forget drops key: its next message is logged at info whatever it says
// (after an acceptance, the next refusal is news).
func (c *changeLog) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.last, key)
}
