package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// ChainSource is the payment chain source as the node sees it, in status.
type ChainSource struct {
	// Backend names the chain source (btcd, or the light client).
	Backend string `json:"backend"`
	// State is connecting (it does not answer: Error says why, NextRetry
	// when the node asks again), syncing (it answers, the wallet opens or
	// catches up with it; Error, if set, is why the wallet did not open)
	// or connected (the wallet is at its tip).
	State string `json:"state"`
	// Since is when State last changed.
	Since time.Time `json:"since"`
	// Error is the last failure while connecting ("" when connected).
	Error string `json:"error,omitempty"`
	// NextRetry is when the node tries again (connecting only).
	NextRetry time.Time `json:"next_retry,omitzero"`
	// Height is the chain source's tip, as last seen; WalletHeight the
	// last block the wallet has processed (0: the wallet is not open).
	Height       int32 `json:"height"`
	WalletHeight int32 `json:"wallet_height"`
	// Reconnects counts the wallet's reopenings after it lagged behind
	// its chain source.
	Reconnects int `json:"reconnects,omitempty"`
}

// Chain source states.
const (
	ChainConnecting = "connecting"
	ChainSyncing    = "syncing"
	ChainConnected  = "connected"
)

// SendRequest asks the daemon's wallet to pay AmountSat to Address.
type SendRequest struct {
	Address   string `json:"address"`
	AmountSat int64  `json:"amount_sat"`
	// FeeRate in sat/vB; 0 is the node's estimate, clamped to the bounds.
	FeeRate int64 `json:"fee_rate,omitempty"`
}

// WalletSender is a Backend whose wallet can send while the daemon holds
// it open (the node; test backends need not).
type WalletSender interface {
	// WalletSend pays req and returns the broadcast transaction's ID.
	// Errors: ErrBadRequest (address, amount), ErrRefused (insufficient
	// funds, fee above the bounds), ErrUnavailable (chain source down,
	// wallet not synced).
	WalletSend(ctx context.Context, req SendRequest) (string, error)
}

// RestoreRequest asks the daemon to replace its wallet with the one a
// seed backup (the JSON `blackbox wallet backup` writes) restores.
type RestoreRequest struct {
	Backup []byte `json:"backup"` // the file's bytes (base64 in JSON)
}

// RestoreResult is the restored wallet.
type RestoreResult struct {
	Network   string `json:"network"`
	Spendable int64  `json:"spendable_sat"`
	Total     int64  `json:"total_sat"`
	// Previous is where the replaced wallet was moved (kept, never
	// deleted: its seed may still own coins).
	Previous string `json:"previous"`
}

// maxRestoreBody caps a restore request (a seed backup is about 400 bytes).
const maxRestoreBody = 64 << 10

// WalletRestorer is a Backend that can replace its wallet while it runs.
type WalletRestorer interface {
	// WalletRestore replaces the wallet with the backup's and rescans.
	// Errors: ErrBadRequest (not a backup, another network), ErrRefused
	// (wrong passphrase; channels, escrows or contracts under way),
	// ErrUnavailable (chain source down). A failure changes nothing.
	WalletRestore(ctx context.Context, backup []byte) (RestoreResult, error)
}

// walletRoutes serves POST /v1/wallet/send and /v1/wallet/restore when b
// can send and restore.
func walletRoutes(mux *http.ServeMux, b Backend, log *slog.Logger) {
	if wr, ok := b.(WalletRestorer); ok {
		mux.HandleFunc("POST /v1/wallet/restore", func(w http.ResponseWriter, r *http.Request) {
			var req RestoreRequest
			if err := json.NewDecoder(io.LimitReader(r.Body, maxRestoreBody)).Decode(&req); err != nil || len(req.Backup) == 0 {
				reply(w, log, nil, fmt.Errorf("%w: want {\"backup\": <a seed backup file, base64>} (%v)", ErrBadRequest, err))
				return
			}
			res, err := wr.WalletRestore(r.Context(), req.Backup)
			reply(w, log, res, err)
		})
	}
	ws, ok := b.(WalletSender)
	if !ok {
		return
	}
	mux.HandleFunc("POST /v1/wallet/send", func(w http.ResponseWriter, r *http.Request) {
		var req SendRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			reply(w, log, nil, fmt.Errorf("%w: %v", ErrBadRequest, err))
			return
		}
		if req.Address == "" || req.AmountSat <= 0 || req.FeeRate < 0 {
			reply(w, log, nil, fmt.Errorf("%w: want an address, a positive amount_sat and a fee_rate >= 0", ErrBadRequest))
			return
		}
		txid, err := ws.WalletSend(r.Context(), req)
		reply(w, log, IDResponse{ID: txid}, err)
	})
}

// WalletSend asks the daemon's wallet to pay req and returns the txid.
func (c *Client) WalletSend(ctx context.Context, req SendRequest) (string, error) {
	var r IDResponse
	return r.ID, c.do(ctx, http.MethodPost, "/v1/wallet/send", req, &r)
}

// WalletRestore asks the daemon to replace its wallet with backup's.
func (c *Client) WalletRestore(ctx context.Context, backup []byte) (RestoreResult, error) {
	var r RestoreResult
	return r, c.do(ctx, http.MethodPost, "/v1/wallet/restore", RestoreRequest{Backup: backup}, &r)
}
