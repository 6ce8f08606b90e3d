package payment

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// Third-party checks of a channel payment: a node that is neither the buyer
// nor the seller (one receiving a reputation attestation) checks from the
// open request and an update alone that the buyer really signed a close
// paying the seller. Whether the funding exists on chain is the caller's
// question to its Chain.

// OpenRequest returns the open message of c (what the buyer sent the
// seller), to hand to a third party. The funding transaction is stripped of
// its witnesses: its txid and outputs are all a verifier needs.
func (c *Channel) OpenRequest() *OpenRequest {
	funding := c.FundingTx
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(c.FundingTx)); err == nil && len(tx.TxIn) > 0 {
		var b bytes.Buffer
		if err := tx.SerializeNoWitness(&b); err == nil {
			funding = b.Bytes()
		}
	}
	return &OpenRequest{
		BuyerKey: bytes.Clone(c.BuyerKey), SellerKey: bytes.Clone(c.SellerKey), Expiry: c.Expiry,
		CloseFee: c.CloseFee, SellerScript: bytes.Clone(c.SellerScript), BuyerScript: bytes.Clone(c.BuyerScript),
		FundingTx: bytes.Clone(funding), Vout: c.Vout,
	}
}

// ChannelFromOpen is a third party's view of the channel o describes: it
// rebuilds the channel script from o's keys and expiry and checks that
// output Vout of the funding transaction pays its P2WSH. The channel has
// its fixed parameters (ID, keys, capacity, scripts) and no state.
func ChannelFromOpen(o *OpenRequest) (*Channel, error) {
	seller, err := btcec.ParsePubKey(o.SellerKey)
	if err != nil {
		return nil, fmt.Errorf("%w: seller key: %v", ErrWrongKey, err)
	}
	buyer, err := btcec.ParsePubKey(o.BuyerKey)
	if err != nil {
		return nil, fmt.Errorf("%w: buyer key: %v", ErrWrongKey, err)
	}
	if bytes.Equal(o.BuyerKey, o.SellerKey) {
		return nil, fmt.Errorf("%w: buyer and seller keys are equal", ErrWrongKey)
	}
	if len(o.SellerScript) == 0 || len(o.BuyerScript) == 0 {
		return nil, fmt.Errorf("%w: empty payout script", ErrMalformed)
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(o.FundingTx)); err != nil {
		return nil, fmt.Errorf("%w: funding tx: %v", ErrMalformed, err)
	}
	if int(o.Vout) >= len(tx.TxOut) {
		return nil, fmt.Errorf("%w: no output %d", ErrBadFunding, o.Vout)
	}
	ws, err := ChannelScript(seller, buyer, o.Expiry)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	pk, err := P2WSH(ws)
	if err != nil {
		return nil, err
	}
	out := tx.TxOut[o.Vout]
	if !bytes.Equal(out.PkScript, pk) {
		return nil, fmt.Errorf("%w: output %d is not the channel script", ErrBadFunding, o.Vout)
	}
	if out.Value <= o.CloseFee {
		return nil, fmt.Errorf("%w: capacity %d below close fee %d", ErrBadFunding, out.Value, o.CloseFee)
	}
	return &Channel{
		ID:       wire.NewOutPoint(ptr(tx.TxHash()), o.Vout).String(),
		BuyerKey: bytes.Clone(o.BuyerKey), SellerKey: bytes.Clone(o.SellerKey), Expiry: o.Expiry,
		Capacity: out.Value, CloseFee: o.CloseFee, SellerScript: bytes.Clone(o.SellerScript),
		BuyerScript: bytes.Clone(o.BuyerScript), FundingTx: bytes.Clone(o.FundingTx), Vout: o.Vout,
	}, nil
}

// VerifyUpdate is a third party's check of an update on channel c: it is
// for this channel, pays c's seller script, its amounts are consistent
// (0 <= ContractAmount <= Amount <= Capacity), and the buyer's signature of
// the close paying Amount verifies. The signature is checked as the seller
// checks it (checkUpdate): the script engine runs the whole close witness
// with the seller's slot vouched for by a signature cache entry under the
// channel's seller key, so the engine's one real verification is the
// buyer's CHECKSIG. Failures wrap ErrBadSignature (and ErrScript) or the
// field's error.
func (c *Channel) VerifyUpdate(u *Update) error {
	op, err := c.Outpoint()
	if err != nil {
		return err
	}
	switch {
	case u.ChannelID != op:
		return fmt.Errorf("%w: update is for %s, not %s", ErrUnknownChannel, u.ChannelID, op)
	case !bytes.Equal(u.PayScript, c.SellerScript):
		return ErrWrongScript
	case u.Amount <= 0 || u.Amount > c.Capacity:
		return fmt.Errorf("%w: %d not in (0, %d]", ErrOverCapacity, u.Amount, c.Capacity)
	case u.ContractAmount < 0 || u.ContractAmount > u.Amount:
		return fmt.Errorf("%w: contract %d of channel %d", ErrContractAmount, u.ContractAmount, u.Amount)
	case len(u.Sig) == 0:
		return fmt.Errorf("%w: no signature", ErrBadSignature)
	case bytes.Equal(c.BuyerKey, c.SellerKey):
		// The cache would vouch for checkSig in the buyer's slot too.
		return fmt.Errorf("%w: %w: buyer and seller keys are equal", ErrBadSignature, ErrWrongKey)
	}
	ws, err := c.Script()
	if err != nil {
		return err
	}
	pk, err := P2WSH(ws)
	if err != nil {
		return err
	}
	return checkCloseSig(c, ws, pk, u.Amount, u.Sig)
}

// checkCloseSig runs the script engine on the close of channel c (witness
// script ws, output script pk) paying amount, with the buyer's signature
// buyerSig and our own slot vouched for under c's seller key: whether the
// buyer's signature makes that close valid.
func checkCloseSig(c *Channel, ws, pk []byte, amount int64, buyerSig []byte) error {
	tx, err := c.CloseTx(amount)
	if err != nil {
		return err
	}
	fetcher := txscript.NewCannedPrevOutputFetcher(pk, c.Capacity)
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	digest, err := txscript.CalcWitnessSigHash(ws, hashes, txscript.SigHashAll, tx, 0, c.Capacity)
	if err != nil {
		return fmt.Errorf("close sighash: %w", err)
	}
	cache := txscript.NewSigCache(2)
	var h chainhash.Hash
	copy(h[:], digest)
	cache.Add(h, checkSig, c.SellerKey)
	tx.TxIn[0].Witness = ChannelCloseWitness(ws, buyerSig, append(slices.Clip(checkSig), byte(txscript.SigHashAll)))
	vm, err := txscript.NewEngine(pk, tx, 0, txscript.StandardVerifyFlags, cache, hashes, c.Capacity, fetcher)
	if err == nil {
		err = vm.Execute()
	}
	if err != nil {
		return fmt.Errorf("%w: %w: %v", ErrBadSignature, ErrScript, err)
	}
	return nil
}
