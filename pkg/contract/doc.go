// Package contract owns how a buyer and a seller agree on a job and see it
// through: the signed records (Request inside a Proposal, Decision, Contract,
// Receipt), buyer-side ranking of offers, the /blackbox/negotiate/1.0.0
// protocol with admission control by reservations held atomically in the
// store, the persisted contract state machine, the /blackbox/job/1.4.0
// protocol that ships the image (unless the seller says it holds that
// digest's image) and the inputs, pays each billing interval in advance over
// a payment channel and brings back results with a signed receipt, and
// whose running job outlives its stream and both daemons within
// RestartGrace (resume.go), and the seller and buyer engines that drive it
// all. A request with a Service makes a service (service.go,
// service_buyer.go): its job is restarted when it exits and health-checked
// by the seller, renewed by overlapping contracts and replicated by the
// buyer, and reached through the /blackbox/forward/1.0.0 protocol
// (forward.go).
//
// It talks to the sandbox, the payment channels, reputation and the database
// only through the small interfaces defined here (Runner, PaymentReceiver,
// Payer, Reputation, Store); the node adapts the concrete types.
//
// Every record that crosses the network is a go-libp2p signed envelope whose
// payload is protobuf wire format written field by field in number order, so
// signatures are over exact bytes; every decoder caps the input size before
// it parses anything and refuses unknown fields.
//
// # Billing
//
// A contract's price is per billing interval (the offer's), in millisats;
// Proposal.Owed(n) is what n started intervals cost in sats, start fee
// included. The buyer pays interval 1 before the job starts; at the end of
// each interval n the seller sends a heartbeat and the buyer pays for n+1.
// A payment not there PayGrace after an interval starts stops the job
// (receipt reason "unpaid"): the seller risks at most that grace. A
// heartbeat not there HeartbeatGrace after an interval ends stops the
// payments and the buyer tries another seller: it risks at most the one
// interval it paid in advance.
//
// # Wiring (the node)
//
//	st := store.NewContractStore(db)              // internal/store
//	seller, _ := contract.NewSeller(contract.SellerConfig{
//		Host: h, Key: key, Store: st,
//		Runner:   sandboxRunner,                  // adapts *sandbox.Sandbox
//		Payments: paymentReceiver,                // adapts *payment.Manager (seller side)
//		Offer:    publisher.Current,              // current *offer.Offer, nil when not selling
//		Capacity: func() offer.Resources { ... }, // meter spare + seller.Held(), one snapshot
//		Log:      log,
//	})
//	seller.Start(ctx)       // Recover, handlers for both protocols, timeout loop
//	meter.New(cfg, dir, meter.HeldFunc(func() meter.Capacity { return seller.Held() }), log)
//
//	buyer, _ := contract.NewBuyer(contract.BuyerConfig{
//		Host: h, Key: key, Store: st, Payer: payer, PaymentKey: pub33,
//		Blobs: contract.DirBlobs(filepath.Join(dataDir, "blobs")),
//		Find:  discoverer.Find, ResultDir: filepath.Join(dataDir, "results"),
//	})
//	buyer.Start(ctx)
//	id, _ := buyer.Submit(ctx, req) // then Job, Jobs, Wait, Cancel
package contract
