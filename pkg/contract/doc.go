// Package contract owns how a buyer and a seller agree on a job and see it
// through: the signed records (Request inside a Proposal, Decision, Contract,
// Receipt), buyer-side ranking of offers, the /blackbox/negotiate/1.0.0
// protocol with admission control by reservations held atomically in the
// store, the persisted contract state machine, the /blackbox/job/1.0.0
// protocol that ships the image, pays each billing interval in advance over
// a payment channel and brings back results with a signed receipt, and the
// seller and buyer engines that drive it all.
//
// It talks to the sandbox, the payment channels, reputation and the database
// only through the small interfaces defined here (Runner, PaymentReceiver,
// Payer, Reputation, Store); the node adapts the concrete types.
//
// Every record that crosses the network is a go-libp2p signed envelope whose
// payload is protobuf wire format written field by field in number order, so
// signatures are over exact bytes; every decoder caps the input size before
// it parses anything and refuses unknown fields.
package contract
