package cli

import "github.com/spf13/cobra"

// examples are the Example sections of --help, by command path, kept in
// one place so that they read as one manual. A command may also set its
// own Example field; applyExamples fills only the empty ones, and a test
// fails when a command has none.
var examples = map[string]string{
	"blackbox": `  # sell: run the node (creates its data dir and config on first start)
  blackbox serve
  # buy: run a job on the market and bring its results home
  blackbox submit --image ./job.tar --cpus 1 --memory 256MiB --time 2m --max-price 500 -- sh -c 'echo hi'`,
	"blackbox serve": `  blackbox serve
  blackbox serve --data-dir /var/lib/blackbox --bootstrap /ip4/203.0.113.7/tcp/7460/p2p/12D3KooW...
  BLACKBOX_WALLET_PASSPHRASE="$(cat ~/.blackbox-pass)" blackbox serve --log-level debug`,
	"blackbox status": `  blackbox status
  blackbox status --json
  blackbox status --data-dir /var/lib/blackbox`,
	"blackbox offer": `  blackbox offer
  blackbox offer --json`,
	"blackbox market": `  blackbox market
  blackbox market --cpus 2 --memory 1Gi --time 10m --max-price 2000
  blackbox market --region eu --json`,
	"blackbox submit": `  # a tarball from docker save, podman save or blackbox image build
  blackbox submit --image ./job.tar -- sh -c 'echo hello > /out/hello.txt'
  blackbox submit --image ./job.tar --cpus 2 --memory 1Gi --time 10m --max-price 3000 \
      --input ./data.csv --out ./results -- /bin/analyse /in/data.csv
  # print the job ID and return; follow it with blackbox job
  blackbox submit -d --image ./job.tar -- sleep 60
  # in a large market: rank the first 20 matching offers found, not all
  blackbox submit --limit 20 --image ./job.tar -- sh -c 'echo hi'
  # paid on delivery from an escrow, with an arbiter for disputes
  blackbox submit --escrow 12D3KooWArbiter... --image ./job.tar -- ./render
  # a web site that runs until cancelled, on two sellers, at most 500 sats an hour
  blackbox submit --service --port 8080 --replicas 2 --max-price 500 --health http:/ \
      --image ./web.tar -- httpd -f -p 8080`,
	"blackbox forward": `  blackbox forward 5f3a --listen 127.0.0.1:8080
  blackbox forward 5f3a          # any free port; prints the address`,
	"blackbox jobs": `  blackbox jobs
  blackbox jobs --json`,
	"blackbox job": `  blackbox job 5f3a          # any unique prefix of the ID
  blackbox job 5f3a --logs
  blackbox job 5f3a9c0e11d2b7aa --json`,
	"blackbox results": `  blackbox results 5f3a --out ./results`,
	"blackbox cancel":  `  blackbox cancel 5f3a`,
	"blackbox contracts": `  blackbox contracts
  blackbox contracts --json`,
	"blackbox config": `  blackbox config show`,
	"blackbox config show": `  blackbox config show
  blackbox config show --data-dir /var/lib/blackbox`,
	"blackbox wallet": `  blackbox wallet create
  blackbox wallet address
  blackbox wallet balance`,
	"blackbox wallet create": `  BLACKBOX_WALLET_PASSPHRASE='correct horse battery staple' blackbox wallet create
  blackbox wallet create --data-dir ./buyer`,
	"blackbox wallet address": `  blackbox wallet address`,
	"blackbox wallet balance": `  blackbox wallet balance
  blackbox wallet balance --min-conf 0 --json`,
	"blackbox wallet send": `  # through the running daemon's API, or the wallet itself when none runs
  blackbox wallet send bcrt1q... 50000
  blackbox wallet send bc1q... 120000 --fee-rate 5`,
	"blackbox wallet backup": `  blackbox wallet backup ./wallet-backup.json
  blackbox wallet backup - > /media/usb/wallet-backup.json`,
	"blackbox wallet restore": `  # through the running daemon (refused while channels, escrows or contracts
  # are under way), or offline when none runs
  blackbox wallet restore ./wallet-backup.json`,
	"blackbox channels": `  blackbox channels
  blackbox channels --json`,
	"blackbox channel": `  blackbox channel close 4e1f`,
	"blackbox channel close": `  blackbox channel close 4e1f          # any unique prefix of the ID
  blackbox channel close 4e1f...c2:0   # the full funding outpoint`,
	"blackbox restore": `  blackbox restore
  blackbox restore --from /mnt/backup/channels.backup`,
	"blackbox trust": `  blackbox trust add 12D3KooWH3uV... --weight 0.5
  blackbox trust ls
  blackbox trust rm 12D3KooWH3`,
	"blackbox trust add": `  blackbox trust add 12D3KooWH3uVHPqAKMtvV5rJTwhZBc8Rng2ZKcquHyf3gBTgEs4s
  blackbox trust add 12D3KooWH3 --weight 0.5   # a unique prefix of a known peer`,
	"blackbox trust rm": `  blackbox trust rm 12D3KooWH3`,
	"blackbox trust ls": `  blackbox trust ls
  blackbox trust ls --json`,
	"blackbox reputation": `  blackbox reputation
  blackbox reputation 12D3KooWH3          # why this peer's score is what it is
  blackbox reputation --json`,
	"blackbox reputation forget": `  blackbox reputation forget 12D3KooWH3`,
	"blackbox sandbox":           `  blackbox sandbox run --image ./job.tar -- sh -c 'echo hi'`,
	"blackbox doctor": `  blackbox doctor
  blackbox doctor --json
  blackbox doctor --data-dir /var/lib/blackbox   # as root: the service's node`,
	"blackbox version": `  blackbox version`,
}

// applyExamples sets the Example of every command under c that has none.
func applyExamples(c *cobra.Command) {
	if c.Example == "" {
		c.Example = examples[c.CommandPath()]
	}
	for _, sub := range c.Commands() {
		applyExamples(sub)
	}
}
