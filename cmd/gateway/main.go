// Command gateway is the privacy-preserving analytics gateway: it serves
// researchers' SQL over hospital data as protected aggregates only, and
// gives stewards, approvers and auditors the governance around it.
//
// Usage:
//
//	gateway init  --dir DIR | --config FILE
//	gateway version
//	gateway demo  [--addr 127.0.0.1:8080] [--flight-addr ADDR] [--dir ./gateway-data] [--patients 100000]
//	gateway serve --config FILE [--flight-addr ADDR]
//	gateway audit verify --dir DIR [--public-key FILE] [--since CHECKPOINT]
//	gateway audit checkpoint --dir DIR
//	gateway node --config FILE
//	gateway coordinator --config FILE
//	gateway federation demo [--dir ./federation-data] [--nodes 3]
//	gateway backup --dir DIR OUT
//	gateway restore --dir NEWDIR BACKUP
//
// cmd/gateway is the only package that reads flags and the environment; it
// builds the objects of the library packages and wires them together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `gateway: privacy-preserving analytics over hospital data

Commands:
  init          create an empty gateway (store, keys, first admin and approver) and
                print their one-time enrolment secrets
                  --dir DIR | --config FILE
  version       print the gateway's and DuckDB's versions
  demo          create (on first start) and serve the synthetic demo_hospital dataset
                  --addr ADDR       listen address (default 127.0.0.1:8080)
                  --flight-addr ADDR  also serve Arrow Flight SQL there (default: off)
                  --dir DIR         data directory (default ./gateway-data)
                  --keys KEYS       key directory, outside DIR (default DIR-keys, beside it)
                  --patients N      demo size (default 100000)
                  --metadata DSN    metadata store: SQLite path or postgres:// URL
                                    (default DIR/metadata.db)
  serve         serve registered datasets without demo data
                  --config FILE     YAML configuration (see gateway.example.yaml)
                  --flight-addr ADDR  also serve Arrow Flight SQL there (or flight_addr:)
  dataset register --url URL --token TOKEN MANIFEST.yaml
                register (or reload) a dataset from Parquet, CSV or Arrow files
                with its grade, description and column policy into a running
                gateway, which serves it at once; a reload that changes the row
                count materially flags it for re-grading
                (--as STEWARD --dir DIR: into a stopped gateway's directory)
  dataset suggest [--k K] TABLE=FILE...
                print a starting manifest and policy for files
  catalog report [--dir DIR] [--json]
                the Article 6 report: source, category, grade, scale, purpose,
                method, responsible party, cross-border transmission, protection
  audit verify  check the audit log's hash chain and signed heads; it must end at a
                signed head, or in a tail a running gateway has not signed yet
                  --dir DIR | --metadata DSN
                  --public-key FILE your copy of the gateway's audit.pub (default KEYS/audit.pub)
                  --since FILE      a kept checkpoint the log must still extend
                  --save FILE       write the newest signed head there as a checkpoint
                  --max-unsigned D  oldest unsigned entry allowed (default 10s; 0: none)
  audit checkpoint [--dir DIR] [--keys KEYS]
                sign the audit head and print it (size, head, time, signature) as
                JSON for auditors to keep outside the gateway
  audit prune --before YYYY-MM-DD [--dir DIR]
                delete expired entries; refused while any is within retention
                (1 year; 3 years for core data and providing important data)
  audit check-export --public-key FILE EXPORT
                verify a signed audit export (JSON or CSV from GET /v1/audit/export)
  node          serve a hospital's gateway and its federation endpoint
                  --config FILE     serve's YAML plus a federation: block (name, listen,
                                    certs, members, coordinator); see gateway.example.yaml
  coordinator   accept researchers' federated queries and combine the hospitals' shares
                  --config FILE     YAML: addr, name, certs, timeout, nodes (name, url),
                                    researchers (id, token_sm3)
  federation certs [--dir DIR] NAME...
                issue a federation authority and mutual-TLS certificates for members
  federation demo [--dir ./federation-data] [--nodes 3] [--patients 20000]
                  [--addr 127.0.0.1:8090]
                start synthetic hospitals, their federation endpoints and a
                coordinator on loopback; tokens in DIR/federation-credentials.json
  backup        an online snapshot of a gateway: the SQLite store and the encrypted
                table files, checksummed, without the keys
                  --dir DIR [--metadata DSN] OUT
  restore       bring a backup back into a new data directory
                  --dir NEWDIR [--metadata DSN] BACKUP
  help          show this text; every command takes --help for its flags and an example

Environment (each overrides its file in the key directory):
  GATEWAY_DATA_KEY   data-at-rest key as "sm4-gcm:HEX" (default: KEYS/data.key,
                     created on first start with mode 0600)
  GATEWAY_AUDIT_KEY  audit signing key, hex of the SM2 key's DER (default:
                     KEYS/audit.key, created on first start with KEYS/audit.pub)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := run(ctx, os.Args[1:], os.Stdout, log)
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	err := dispatch(ctx, args, stdout, log)
	var h helpShown
	if errors.As(err, &h) {
		fmt.Fprint(stdout, h.text)
		return nil
	}
	return err
}

// groups are the commands that take a subcommand.
var groups = map[string]bool{"dataset": true, "catalog": true, "audit": true, "federation": true}

func dispatch(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		return usageError{"name a command"}
	}
	if isHelp(args[0]) {
		if len(args) > 1 {
			return dispatch(ctx, append(args[1:], "--help"), stdout, log)
		}
		fmt.Fprint(stdout, usage)
		return nil
	}
	name := args[0]
	if groups[name] {
		if len(args) < 2 || isHelp(args[1]) {
			if len(args) >= 2 {
				return helpShown{groupHelp(name)}
			}
			return usageError{fmt.Sprintf("%s takes a subcommand; see gateway %s --help", name, name)}
		}
		name += " " + args[1]
		args = args[1:]
	}
	if _, ok := commands[name]; !ok {
		return usageError{fmt.Sprintf("unknown command %q; see gateway --help", name)}
	}
	rest := args[1:]
	switch name {
	case "init":
		return runInit(ctx, rest, stdout, log)
	case "version":
		return runVersion(ctx, rest, stdout)
	case "demo":
		return runDemo(ctx, rest, stdout, log)
	case "serve":
		return runServe(ctx, rest, log)
	case "node":
		return runNode(ctx, rest, log)
	case "coordinator":
		return runCoordinator(ctx, rest, log)
	case "federation certs", "federation demo":
		return runFederation(ctx, args, stdout, log)
	case "dataset register":
		return runRegister(ctx, rest, stdout, log)
	case "dataset suggest":
		return runSuggest(ctx, rest, stdout)
	case "catalog report":
		return runReport(ctx, rest, stdout)
	case "audit verify":
		return runAuditVerify(ctx, rest, stdout)
	case "audit checkpoint":
		return runAuditCheckpoint(ctx, rest, stdout)
	case "audit check-export":
		return runCheckExport(rest, stdout)
	case "audit prune":
		return runPrune(ctx, rest, stdout, log)
	case "backup":
		return runBackup(ctx, rest, stdout)
	case "restore":
		return runRestore(ctx, rest, stdout)
	}
	return usageError{fmt.Sprintf("unknown command %q; see gateway --help", name)}
}

// defaultDir is the data directory when --dir is not given.
const defaultDir = "./gateway-data"

// dataFlags registers --dir and --metadata, shared by every command that
// opens a data directory; options.defaults resolves what is left empty.
func dataFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.Dir, "dir", defaultDir, "data directory")
	fs.StringVar(&o.Keys, "keys", "", "key directory, outside the data directory (default DIR-keys)")
	fs.StringVar(&o.Metadata, "metadata", "", "metadata store: SQLite path or postgres:// URL (default DIR/metadata.db)")
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// existing fills in opts' defaults and checks that its metadata store is
// there, for commands that read a gateway rather than create one: an
// SQLite store that is missing is named with the --dir that was looked in.
func (o *options) existing() error {
	o.defaults()
	if isPostgres(o.Metadata) {
		return nil
	}
	if _, err := os.Stat(o.Metadata); err != nil {
		return fmt.Errorf("no gateway in %s (no metadata store %s): name the data directory with --dir DIR (or the store with --metadata), or create one with gateway init --dir DIR", o.Dir, o.Metadata)
	}
	return nil
}

// isPostgres reports whether dsn names a PostgreSQL store.
func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}
