package payment

// SyncedTo is the last block the wallet has processed (its height), and
// whether btcwallet considers itself caught up with its chain source. The
// node compares it with the chain's tip to tell a wallet that lags (after
// its chain source restarted) and to reopen it when it does not catch up.
func (w *Wallet) SyncedTo() (height int32, synced bool) {
	return w.w.Manager.SyncedTo().Height, w.w.ChainSynced()
}

// ChainClientDown reports whether the wallet's chain client has lost its
// connection to the chain source (btcd's websocket between btcd's restart
// and rpcclient's reconnect, which backs off up to a minute); a chain
// client that cannot tell (the light client, in process) is never down.
func (w *Wallet) ChainClientDown() bool {
	c, ok := w.w.ChainClient().(interface{ Disconnected() bool })
	return ok && c.Disconnected()
}
