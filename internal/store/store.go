// Package store owns the node's one embedded database: a bbolt file in the data
// dir, its schema version and the ordered list of migrations that bring an older
// file up to date.
//
// bbolt rather than SQLite: it is pure Go (no cgo, one static binary), every
// committed transaction is fsynced before Update returns, which is exactly the
// "persisted before acknowledged" rule the payment and contract code rely on,
// and the node's data is small keyed records (offers, reservations, contracts,
// channel updates) that need no query planner. The database holds an exclusive
// file lock, so two daemons can never share one data dir.
//
// Subsystems see the store through a small key-value surface (Tx): named
// buckets of byte keys and values. Their own record encodings stay in their
// packages; nothing from bbolt leaks into pkg/.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNotFound is returned by Get-style helpers when a key is absent.
var ErrNotFound = errors.New("store: not found")

// ErrLocked is returned by Open when another process holds the database.
var ErrLocked = errors.New("store: database is in use by another process")

// ErrDamaged is returned by Open when the database file is corrupt, or
// was created before and is now missing or empty. Open never repairs nor
// re-creates such a file: it holds the node's money (signed payments).
var ErrDamaged = errors.New("store: database is damaged")

// MarkerSuffix names the file next to the database that records that the
// database was created (path + MarkerSuffix). Its presence without the
// database means the database was lost, not that the node is new.
const MarkerSuffix = ".created"

const (
	metaBucket = "meta"
	versionKey = "schema_version"
)

// Migration moves the database from version Version-1 to Version. Migrations
// run inside one write transaction each; a failing one leaves the file at the
// previous version.
type Migration struct {
	Version int
	Name    string
	Apply   func(tx *Tx) error
}

// migrations is the append-only list of schema changes. Versions are explicit
// and never renumbered; a new one is appended with the next number.
var migrations = []Migration{
	{Version: 1, Name: "initial buckets", Apply: func(tx *Tx) error {
		for _, b := range []string{"offers", "reservations", "contracts", "peers"} {
			if err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	}},
}

// SchemaVersion is the version a freshly opened database ends up at.
func SchemaVersion() int { return migrations[len(migrations)-1].Version }

// DB is the node's database.
type DB struct {
	bolt *bolt.DB
	path string

	plMu sync.Mutex // guards pl
	pl   *paylog    // the payment log, created by the first PutChannel
	shut bool       // Close was called
	// plHook runs before the payment log drops values it committed to
	// bbolt (PaymentStore.OnCompact).
	plHook atomic.Pointer[func() error]
	// later holds the changes queued by Later (later.go).
	later laterQueue
}

// Open opens the database at path, takes its file lock (waiting at most
// lockWait), checks its consistency and applies pending migrations. It
// creates the database only where none ever was: a file that is missing or
// empty while its marker (path + MarkerSuffix) says it was created, or one
// that fails the consistency check, is refused with ErrDamaged and a
// message that says what to do; nothing is written then.
func Open(path string, lockWait time.Duration) (*DB, error) {
	return open(path, lockWait, false)
}

// OpenFresh creates a new database at path where the previous one is
// missing or empty (its marker notwithstanding), for `blackbox restore`.
// An existing non-empty database is refused: move it aside first.
func OpenFresh(path string, lockWait time.Duration) (*DB, error) {
	return open(path, lockWait, true)
}

func open(path string, lockWait time.Duration, fresh bool) (*DB, error) {
	if lockWait <= 0 {
		lockWait = time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	created, err := checkPresence(path, fresh)
	if err != nil {
		return nil, err
	}
	b, err := boltOpen(path, lockWait)
	if err != nil {
		return nil, err
	}
	if !created {
		if err := check(b); err != nil {
			b.Close()
			return nil, fmt.Errorf("open store %s: %w: %v\n%s", path, ErrDamaged, err, damagedHelp(path, "is corrupt"))
		}
	}
	// Group commit waits at most this long for more writers to join a
	// batch (bbolt's default of 10ms is tuned for spinning disks); a lone
	// writer does not wait at all (see Batch).
	b.MaxBatchDelay = 2 * time.Millisecond
	db := &DB{bolt: b, path: path}
	if err := db.migrate(migrations); err != nil {
		b.Close()
		return nil, err
	}
	if err := replayPaylog(db); err != nil {
		b.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// The marker is written once the file holds a valid database: from
	// then on, its loss is an error, not a fresh start. A database from
	// before markers gets one now.
	if err := writeMarker(path); err != nil {
		b.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// checkPresence refuses a database that was created before (its marker
// exists) and is now missing or empty, and any empty file (bbolt writes
// its first pages at creation, so an empty file is one that lost them).
// It reports whether the database is about to be created. With fresh, a
// missing or empty file is (re)created and an existing one refused.
func checkPresence(path string, fresh bool) (bool, error) {
	st, err := os.Stat(path)
	switch {
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("open store %s: %w", path, err)
	case err == nil && st.Size() > 0:
		if fresh {
			return false, fmt.Errorf("open store %s: a database exists there (%d bytes): move it aside first", path, st.Size())
		}
		return false, nil
	}
	state := "is missing"
	if err == nil {
		state = "is empty (0 bytes)"
	}
	if fresh {
		if err == nil {
			if err := os.Remove(path); err != nil {
				return false, fmt.Errorf("open store %s: %w", path, err)
			}
		}
		return true, nil
	}
	marker, merr := os.ReadFile(path + MarkerSuffix)
	if err == nil || merr == nil {
		why := state
		if merr == nil {
			why = fmt.Sprintf("%s, but it was created on %s", state, strings.TrimSpace(string(marker)))
		}
		return false, fmt.Errorf("open store %s: %w: it %s\n%s", path, ErrDamaged, why, damagedHelp(path, state))
	}
	return true, nil
}

// damagedHelp says what to do about a damaged database.
func damagedHelp(path, state string) string {
	return fmt.Sprintf("The database holds the node's channels and signed payments; it is not re-created while it %s.\n"+
		"To recover: stop the node, move %s aside, and either put back a copy of the file from a backup, or run\n"+
		"  blackbox restore\n"+
		"to rebuild the payment channels from the channel backup (payment.backup_file, by default channels.backup in the data dir), then start the node again.",
		state, path)
}

// writeMarker records, next to the database, when it was created (once).
func writeMarker(path string) error {
	m := path + MarkerSuffix
	if _, err := os.Stat(m); err == nil {
		return nil
	}
	f, err := os.OpenFile(m, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write database marker: %w", err)
	}
	_, err = fmt.Fprintln(f, time.Now().UTC().Format(time.RFC3339))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("write database marker: %w", err)
	}
	return nil
}

// RemoveMarker forgets that the database at path was created (restore
// rebuilds it).
func RemoveMarker(path string) error {
	if err := os.Remove(path + MarkerSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// boltOpen opens the bbolt file, turning bbolt's panics on a corrupt file
// (and memory faults on a truncated one) into ErrDamaged.
func boltOpen(path string, lockWait time.Duration) (b *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("open store %s: %w: its pages do not read (%s)\n%s", path, ErrDamaged, panicText(r), damagedHelp(path, "is corrupt"))
		}
	}()
	b, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait, FreelistType: bolt.FreelistMapType})
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("open store %s: %w", path, err)
	case err != nil:
		// bbolt's other refusals are all about the file's contents
		// (invalid meta pages, checksum, version, a file too small for
		// what its meta page says).
		return nil, fmt.Errorf("open store %s: %w: %v\n%s", path, ErrDamaged, err, damagedHelp(path, "is corrupt"))
	}
	return b, nil
}

// check reads every bucket, key and value of the database (recovering
// from the panics and memory faults bbolt raises on corrupt pages) and then
// runs bbolt's own consistency check (page accounting, ordering).
func check(b *bolt.DB) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("its pages do not read (%s)", panicText(r))
		}
	}()
	var sink byte
	return b.View(func(tx *bolt.Tx) error {
		var walk func(bk *bolt.Bucket, depth int) error
		walk = func(bk *bolt.Bucket, depth int) error {
			if depth > 16 {
				return errors.New("buckets nested too deep")
			}
			return bk.ForEach(func(k, v []byte) error {
				// Touch the value's pages (a truncated file faults here).
				for i := 0; i < len(v); i += 1024 {
					sink += v[i]
				}
				if v == nil {
					if sub := bk.Bucket(k); sub != nil {
						return walk(sub, depth+1)
					}
				}
				return nil
			})
		}
		if err := tx.ForEach(func(name []byte, bk *bolt.Bucket) error { return walk(bk, 0) }); err != nil {
			return err
		}
		var errs []error
		for e := range tx.Check() {
			if len(errs) < 5 {
				errs = append(errs, e)
			}
		}
		return errors.Join(errs...)
	})
}

// Path is the database file's location.
func (db *DB) Path() string { return db.path }

// Close commits the pending Later changes and the payment log into the
// database, removes the log, and releases the file and its lock.
func (db *DB) Close() error {
	lerr := db.FlushLater()
	db.plMu.Lock()
	l := db.pl
	db.pl, db.shut = nil, true
	db.plMu.Unlock()
	var err error
	if l != nil {
		err = l.close()
	}
	return errors.Join(lerr, err, db.bolt.Close())
}

// paylog returns the payment log, creating it on first use.
func (db *DB) paylog() (*paylog, error) {
	db.plMu.Lock()
	defer db.plMu.Unlock()
	if db.shut {
		return nil, errors.New("database closed")
	}
	if db.pl == nil {
		l, err := createPaylog(db)
		if err != nil {
			return nil, err
		}
		db.pl = l
	}
	return db.pl, nil
}

// Version reads the stored schema version (0 for a file never migrated).
func (db *DB) Version() (int, error) {
	v := 0
	err := db.View(func(tx *Tx) error {
		raw := tx.Get(metaBucket, versionKey)
		if raw == nil {
			return nil
		}
		n, err := strconv.Atoi(string(raw))
		if err != nil {
			return fmt.Errorf("corrupt schema version %q", raw)
		}
		v = n
		return nil
	})
	return v, err
}

func (db *DB) migrate(list []Migration) error {
	cur, err := db.Version()
	if err != nil {
		return err
	}
	latest := list[len(list)-1].Version
	if cur > latest {
		return fmt.Errorf("store %s has schema version %d, newer than this binary's %d: upgrade blackbox", db.path, cur, latest)
	}
	for _, m := range list {
		if m.Version <= cur {
			continue
		}
		err := db.Update(func(tx *Tx) error {
			if err := m.Apply(tx); err != nil {
				return err
			}
			return tx.Put(metaBucket, versionKey, []byte(strconv.Itoa(m.Version)))
		})
		if err != nil {
			return fmt.Errorf("migrate store to version %d (%s): %w", m.Version, m.Name, err)
		}
	}
	return nil
}

// Update runs fn in a read-write transaction. When it returns nil the change is
// on disk (fsynced); any error rolls everything back.
func (db *DB) Update(fn func(tx *Tx) error) error {
	return db.bolt.Update(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// Batch runs fn in a read-write transaction shared with other concurrent
// Batch callers (bbolt's group commit): their changes go to disk in one
// commit and one fsync, so many writers pay for few fsyncs. Like Update,
// it returns nil only once fn's change is on disk (fsynced), and an error
// means fn's change is not there.
//
// fn may run more than once and must be idempotent: when one caller's fn
// fails, the shared transaction is rolled back and rerun without it, and
// the failing fn is then run once more alone (its error is returned from
// that run). fn must not keep state across runs nor have effects outside
// tx. A lone caller waits for bbolt's MaxBatchDelay before its commit:
// Batch is for concurrent writers; a single writer that needs low latency
// uses Update.
func (db *DB) Batch(fn func(tx *Tx) error) error {
	return db.bolt.Batch(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// View runs fn in a read-only transaction.
func (db *DB) View(fn func(tx *Tx) error) error {
	return db.bolt.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// Tx is a transaction over named buckets of byte keys and values. Values
// returned by Get are copies and stay valid after the transaction.
type Tx struct {
	tx *bolt.Tx
}

// CreateBucket makes sure a bucket exists (only in write transactions).
func (t *Tx) CreateBucket(name string) error {
	_, err := t.tx.CreateBucketIfNotExists([]byte(name))
	return err
}

// Put stores value under key in bucket, creating the bucket if needed.
func (t *Tx) Put(bucket, key string, value []byte) error {
	b, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return b.Put([]byte(key), value)
}

// Get returns a copy of the value under key, or nil when absent.
func (t *Tx) Get(bucket, key string) []byte {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil
	}
	return append([]byte(nil), v...)
}

// Delete removes key from bucket; deleting what is not there succeeds.
func (t *Tx) Delete(bucket, key string) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.Delete([]byte(key))
}

// ForEach calls fn for every key in bucket in byte order, with the given
// prefix ("" for all). The value slice is only valid during the call.
func (t *Tx) ForEach(bucket, prefix string, fn func(key string, value []byte) error) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	c := b.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && hasPrefix(k, p); k, v = c.Next() {
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}

func hasPrefix(k, p []byte) bool {
	return len(k) >= len(p) && string(k[:len(p)]) == string(p)
}

// panicText is what bbolt's panic on a corrupt page said, without the
// runtime's prefix (the operator is told about a file, not a crash).
func panicText(r any) string {
	return strings.TrimPrefix(fmt.Sprint(r), "runtime error: ")
}

// Range calls fn for every key k of bucket with lo <= k < hi, in byte order
// (hi "" for no upper bound). The value slice is only valid during the call.
func (t *Tx) Range(bucket, lo, hi string, fn func(key string, value []byte) error) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	c := b.Cursor()
	for k, v := c.Seek([]byte(lo)); k != nil && (hi == "" || string(k) < hi); k, v = c.Next() {
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}
