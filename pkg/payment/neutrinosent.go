package payment

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/lightninglabs/neutrino/pushtx"

	"github.com/blackbox-market/blackbox/pkg/atomicfile"
)

// The light client's unconfirmed transactions survive a restart.
//
// A light client has no mempool: the transactions this node broadcast (its
// fundings, closes, refunds, fee-bump children, wallet sends, and the
// buyers' fundings a seller accepted unconfirmed and broadcast itself) are
// its only view of unconfirmed transactions (NeutrinoChain.sent). They are
// kept in sentFileName in the light client's directory, replaced
// atomically and fsynced on every change, loaded at start and broadcast
// again once the client has a peer (a peer's mempool does not outlive
// its restart either, and neutrino rebroadcasts only what this process
// sent). A transaction leaves the file once it is buried sentKeepDepth
// blocks deep, once a block holds another transaction spending one of its
// inputs (it can never confirm), or sentMaxAge blocks after it was sent.

// sentFileName is the file of the light client's own unconfirmed
// transactions, in its directory.
const sentFileName = "unconfirmed.dat"

// sentMagic starts the file; sentVersion is its format.
const (
	sentMagic   = "bbunconf"
	sentVersion = 1
)

// Limits of the file: a node has a few unconfirmed transactions at a time.
const (
	maxSentTxs      = 4096
	maxSentTxBytes  = 400_000 // a standard transaction's weight limit
	maxSentFileSize = 32 << 20
)

// sentKeepDepth is how deep a transaction is buried before it is
// forgotten (a shallower reorg may return it to the mempool).
const sentKeepDepth = 6

// sentMaxAge is how many blocks after it was sent a transaction that
// never confirmed and was never seen conflicted is forgotten (a channel
// lives 2016 blocks by default).
const sentMaxAge = 4032

// sentTx is one entry of the file: the transaction and the tip when it
// was first sent (the height its scans start from).
type sentTx struct {
	Height int32
	Tx     *wire.MsgTx
}

// encodeSent is the file's content: magic, version, count, then each
// entry (height, length, serialized transaction), then a sha256 of all
// that.
func encodeSent(entries []sentTx) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(sentMagic)
	b.WriteByte(sentVersion)
	b.Write(binary.AppendUvarint(nil, uint64(len(entries))))
	for _, e := range entries {
		var tx bytes.Buffer
		if err := e.Tx.Serialize(&tx); err != nil {
			return nil, err
		}
		b.Write(binary.AppendUvarint(nil, uint64(max(e.Height, 0))))
		b.Write(binary.AppendUvarint(nil, uint64(tx.Len())))
		b.Write(tx.Bytes())
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	return b.Bytes(), nil
}

// errSentFile wraps every reason a file is refused.
var errSentFile = errors.New("unconfirmed transactions file")

// decodeSent reads the file strictly: a bad magic, version or checksum, a
// count or length beyond the limits, a transaction that does not parse
// to exactly its length, a repeated transaction or trailing bytes are
// errors wrapping errSentFile.
func decodeSent(b []byte) ([]sentTx, error) {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{errSentFile}, a...)...) }
	if len(b) > maxSentFileSize {
		return nil, bad("%d bytes, above %d", len(b), maxSentFileSize)
	}
	if len(b) < len(sentMagic)+1+1+sha256.Size {
		return nil, bad("%d bytes: too short", len(b))
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, bad("checksum mismatch")
	}
	if string(body[:len(sentMagic)]) != sentMagic {
		return nil, bad("not one (magic %q)", body[:len(sentMagic)])
	}
	if v := body[len(sentMagic)]; v != sentVersion {
		return nil, bad("version %d, this node reads %d", v, sentVersion)
	}
	rest := body[len(sentMagic)+1:]
	uv := func(what string, limit uint64) (uint64, error) {
		v, n := binary.Uvarint(rest)
		if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
			return 0, bad("%s: bad varint", what)
		}
		if v > limit {
			return 0, bad("%s %d above %d", what, v, limit)
		}
		rest = rest[n:]
		return v, nil
	}
	count, err := uv("count", maxSentTxs)
	if err != nil {
		return nil, err
	}
	out := make([]sentTx, 0, count)
	seen := map[chainhash.Hash]bool{}
	for i := range count {
		h, err := uv("height", 1<<31-1)
		if err != nil {
			return nil, err
		}
		n, err := uv("length", maxSentTxBytes)
		if err != nil {
			return nil, err
		}
		if uint64(len(rest)) < n {
			return nil, bad("entry %d: %d bytes left, %d announced", i, len(rest), n)
		}
		raw := rest[:n]
		rest = rest[n:]
		tx := new(wire.MsgTx)
		r := bytes.NewReader(raw)
		if err := tx.Deserialize(r); err != nil {
			return nil, bad("entry %d: %v", i, err)
		}
		if r.Len() != 0 {
			return nil, bad("entry %d: %d bytes after the transaction", i, r.Len())
		}
		if len(tx.TxIn) == 0 || len(tx.TxOut) == 0 {
			return nil, bad("entry %d: a transaction without inputs or outputs", i)
		}
		id := tx.TxHash()
		if seen[id] {
			return nil, bad("entry %d: %s twice", i, id)
		}
		seen[id] = true
		out = append(out, sentTx{Height: int32(h), Tx: tx})
	}
	if len(rest) != 0 {
		return nil, bad("%d bytes after the last entry", len(rest))
	}
	return out, nil
}

// loadSent reads the light client's file in dir into n.sent. A missing
// file is none; a file that cannot be read is set aside (named in the
// log) and the client starts without it: it then knows its unconfirmed
// transactions again as the chain managers rebroadcast them from their
// records.
func (n *NeutrinoChain) loadSent(dir string) {
	n.sentPath = filepath.Join(dir, sentFileName)
	b, err := os.ReadFile(n.sentPath)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var entries []sentTx
	if err == nil {
		entries, err = decodeSent(b)
	}
	if err != nil {
		aside := n.sentPath + ".bad-" + time.Now().UTC().Format("20060102T150405")
		_ = os.Rename(n.sentPath, aside)
		n.log.Warn("light client: own unconfirmed transactions not loaded; the file is set aside", "file", aside, "err", err)
		return
	}
	n.mu.Lock()
	for _, e := range entries {
		id := e.Tx.TxHash()
		n.sent[id] = e.Tx
		n.sentAt[id] = e.Height
	}
	n.mu.Unlock()
	if len(entries) > 0 {
		n.log.Info("light client: own unconfirmed transactions loaded", "count", len(entries), "file", n.sentPath)
	}
}

// addSent records tx as sent by this node (at the tip now, when first
// seen) and saves the file; it reports whether tx was new.
func (n *NeutrinoChain) addSent(tx *wire.MsgTx) bool {
	id := tx.TxHash()
	n.mu.Lock()
	_, had := n.sent[id]
	n.sent[id] = tx.Copy()
	if _, ok := n.sentAt[id]; !ok {
		h := int32(0)
		if bb, err := n.cs.BestBlock(); err == nil {
			h = bb.Height
		}
		n.sentAt[id] = h
	}
	n.mu.Unlock()
	if !had {
		n.saveSent()
	}
	return !had
}

// dropSent forgets the transactions ids and saves the file.
func (n *NeutrinoChain) dropSent(ids ...chainhash.Hash) {
	if len(ids) == 0 {
		return
	}
	n.mu.Lock()
	for _, id := range ids {
		delete(n.sent, id)
		delete(n.sentAt, id)
	}
	n.mu.Unlock()
	n.saveSent()
}

// saveSent replaces the file with n.sent (atomically, fsynced). A failed
// write is logged: the transactions stay known in memory.
func (n *NeutrinoChain) saveSent() {
	if n.sentPath == "" {
		return
	}
	n.saveMu.Lock()
	defer n.saveMu.Unlock()
	n.mu.Lock()
	entries := make([]sentTx, 0, len(n.sent))
	for id, tx := range n.sent {
		entries = append(entries, sentTx{Height: n.sentAt[id], Tx: tx})
	}
	n.mu.Unlock()
	// Oldest first, then by txid: the same set gives the same file.
	slices.SortFunc(entries, func(a, b sentTx) int {
		if a.Height != b.Height {
			return int(a.Height - b.Height)
		}
		ha, hb := a.Tx.TxHash(), b.Tx.TxHash()
		return bytes.Compare(ha[:], hb[:])
	})
	if len(entries) > maxSentTxs {
		entries = entries[len(entries)-maxSentTxs:]
	}
	b, err := encodeSent(entries)
	if err == nil {
		err = atomicfile.Write(n.sentPath, b, 0o600)
	}
	if err != nil {
		n.log.Warn("light client: save own unconfirmed transactions", "file", n.sentPath, "err", err)
	}
}

// SentTxs returns the transactions the light client holds as its own
// unconfirmed ones (a copy).
func (n *NeutrinoChain) SentTxs() []*wire.MsgTx {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*wire.MsgTx, 0, len(n.sent))
	for _, tx := range n.sent {
		out = append(out, tx.Copy())
	}
	return out
}

// sentPoll is how often the light client looks for a new block to prune
// its unconfirmed transactions at.
const sentPoll = 5 * time.Second

// keepSent runs until n closes: once the client is synced it broadcasts
// the transactions loaded from the file again, and at every new block it
// forgets those buried, conflicted or too old (refreshSent).
func (n *NeutrinoChain) keepSent(loaded bool) {
	defer close(n.keepDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := n.WaitSynced(ctx); err != nil {
		return
	}
	var last chainhash.Hash
	resend := loaded
	for {
		if bb, err := n.cs.BestBlock(); err == nil && (bb.Hash != last || resend) {
			if err := n.refreshSent(ctx, bb.Height, resend); err == nil {
				last, resend = bb.Hash, false
			} else if ctx.Err() == nil {
				n.log.Debug("light client: check own unconfirmed transactions", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(sentPoll):
		}
	}
}

// refreshSent looks at each of the node's unconfirmed transactions: one
// buried sentKeepDepth deep, one conflicted by a transaction in a block,
// or one older than sentMaxAge is forgotten; with resend, every other one
// is broadcast again (neutrino then rebroadcasts it at every block until
// it confirms).
func (n *NeutrinoChain) refreshSent(ctx context.Context, tip int32, resend bool) error {
	n.mu.Lock()
	type item struct {
		tx     *wire.MsgTx
		height int32
	}
	items := make([]item, 0, len(n.sent))
	for id, tx := range n.sent {
		items = append(items, item{tx, n.sentAt[id]})
	}
	n.mu.Unlock()
	var drop []chainhash.Hash
	for _, it := range items {
		id := it.tx.TxHash()
		hint := max(it.height-sentKeepDepth, 0)
		confs, err := n.ConfirmationsOf(ctx, id, it.tx.TxOut[0].PkScript, hint)
		if err != nil {
			return err
		}
		why := ""
		switch {
		case confs >= sentKeepDepth:
			why = "buried"
		case confs <= 0 && it.height > 0 && tip-it.height > sentMaxAge:
			why = "never confirmed"
		case confs <= 0:
			by, err := n.conflictInBlock(ctx, it.tx, hint)
			if err != nil {
				return err
			}
			if by != "" {
				why = "conflicted by " + by
			}
		}
		if why != "" {
			drop = append(drop, id)
			n.log.Info("light client: forgets an own transaction", "txid", id, "why", why, "confs", confs)
			continue
		}
		if resend && confs <= 0 {
			// Not waited for: neutrino waits seconds for the peers'
			// refusals, and a stop must not.
			go func(tx *wire.MsgTx) {
				err := n.cs.SendTransaction(tx)
				if err != nil && !pushtx.IsBroadcastError(err, pushtx.Mempool, pushtx.Confirmed) {
					n.log.Warn("light client: own unconfirmed transaction not broadcast again", "txid", id, "err", err)
					return
				}
				n.log.Info("light client: own unconfirmed transaction broadcast again after a restart", "txid", id)
			}(it.tx)
		}
	}
	n.dropSent(drop...)
	return nil
}

// conflictInBlock returns the txid of a transaction in a block from hint
// up that spends an input of tx, "" when there is none (or no input's
// script can be told from its witness: such a conflict shows only by age).
func (n *NeutrinoChain) conflictInBlock(ctx context.Context, tx *wire.MsgTx, hint int32) (string, error) {
	own := tx.TxHash()
	for _, in := range tx.TxIn {
		pk := inputScript(in, n)
		if pk == nil {
			continue
		}
		_, matches, err := n.match(ctx, pk, hint)
		if err != nil {
			return "", err
		}
		for _, m := range matches {
			blk, err := n.block(ctx, m.hash)
			if err != nil {
				return "", err
			}
			for _, btx := range blk.Transactions {
				if spends(btx, in.PreviousOutPoint) && btx.TxHash() != own {
					return btx.TxHash().String(), nil
				}
			}
		}
	}
	return "", nil
}

// inputScript is the script an input spends, from what it reveals: a
// key-hash input's (spentScript), else a P2WSH witness script's output.
func inputScript(in *wire.TxIn, n *NeutrinoChain) []byte {
	if pk, err := spentScript(in, n.params); err == nil && pk != nil {
		return pk
	}
	if w := in.Witness; len(w) >= 2 && len(in.SignatureScript) == 0 {
		if pk, err := P2WSH(w[len(w)-1]); err == nil {
			return pk
		}
	}
	return nil
}
