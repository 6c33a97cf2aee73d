package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// command is what `gateway CMD --help` prints about a command: its usage
// line, what it does and an example; the flags come from its FlagSet.
type command struct {
	usage, about, example string
}

// commands holds the help of every command and subcommand, keyed by its
// name as typed ("dataset register").
var commands = map[string]command{
	"init": {"gateway init --dir DIR [--keys KEYS] [--metadata DSN] | --config FILE",
		"Create an empty gateway: the metadata store, the data and audit keys in the\nkey directory (outside DIR), and the first admin and first approver, whose\none-time enrolment secrets it prints. Both are enrolled without a second\nperson's confirmation: this is the installer's ceremony, run once.",
		"gateway init --config /etc/gateway/gateway.yaml"},
	"serve": {"gateway serve --config FILE [--flight-addr ADDR]",
		"Serve the registered datasets. Relative paths in FILE are read from FILE's\nfolder. The listen addresses are bound before the datasets load. With\n--flight-addr (or flight_addr: in FILE) Arrow Flight SQL is served there too,\nwith the same tokens, over TLS when tls_cert and tls_key are set.",
		"gateway serve --config /etc/gateway/gateway.yaml"},
	"demo": {"gateway demo [--addr ADDR] [--flight-addr ADDR] [--dir DIR] [--patients N]",
		"Create (on first start) and serve the synthetic demo_hospital dataset with\nits demo people and grants; tokens go to DIR/demo-credentials.json. With\n--flight-addr, Arrow Flight SQL is served there too (grpc://ADDR).",
		"gateway demo --addr 127.0.0.1:8080 --dir ./gateway-data --patients 20000"},
	"backup": {"gateway backup --dir DIR [--metadata DSN] OUT",
		"Take an online snapshot of a gateway, running or not (Art. 22(2)): the\nSQLite metadata store through VACUUM INTO, and the encrypted table files as\nthey are, each checksummed in OUT/backup.json. The keys are left out: keep\nthem separately. With PostgreSQL, back the store up with its own tools.",
		"gateway backup --dir /srv/gateway/data /mnt/backups/gateway-2026-12-02"},
	"restore": {"gateway restore --dir NEWDIR [--metadata DSN] BACKUP",
		"Bring a backup back into a new data directory, after checking every\nfile's checksum; start it with the key directory of the gateway it came from.",
		"gateway restore --dir /srv/gateway/data --keys /mnt/gateway-keys /mnt/backups/gateway-2026-12-02"},
	"version": {"gateway version", "Print the gateway's version and the DuckDB version it embeds.", "gateway version"},
	"dataset register": {"gateway dataset register --url URL --token TOKEN MANIFEST.yaml\n       gateway dataset register --as STEWARD --dir DIR MANIFEST.yaml",
		"Register (or reload) a dataset from Parquet, CSV or Arrow files with its\ngrade, Article 6 description and column policy; paths in the manifest are\nread from the manifest's folder. With --url the files are uploaded to the\nrunning gateway, which serves the dataset at once. With --dir it writes\ninto a stopped gateway's data directory (a running one would not see it).",
		"gateway dataset register --url http://127.0.0.1:8080 --token $STEWARD_TOKEN clinic.yaml"},
	"dataset suggest": {"gateway dataset suggest [--k K] TABLE=FILE...",
		"Print a starting manifest for files, for a steward to edit: roles from\nnames and types, bounds from robust percentiles rounded outward, public\nlists only for low-cardinality columns whose every category has at least\nk patients. Every proposal is marked for the steward to confirm; the\nplaceholders must be replaced before register accepts it.",
		"gateway dataset suggest visits=cmd/gateway/testdata/visits.csv > visits.yaml"},
	"catalog report": {"gateway catalog report [--dir DIR] [--json]",
		"Print the Article 6 report: source, category, grade, scale, purpose,\nmethod, responsible party, cross-border transmission, protection.",
		"gateway catalog report --dir /srv/gateway/data --json"},
	"audit verify": {"gateway audit verify --dir DIR [--public-key FILE] [--since CHECKPOINT]",
		"Check the audit log's hash chain and signed heads. Exit 0 when intact;\nnon-zero, naming the first bad entry, when not.",
		"gateway audit verify --dir /srv/gateway/data --public-key auditors/audit.pub"},
	"audit checkpoint": {"gateway audit checkpoint [--dir DIR] [--keys KEYS]",
		"Sign the audit head and print it as JSON, for auditors to keep outside\nthe gateway and give to audit verify --since.",
		"gateway audit checkpoint --dir /srv/gateway/data > checkpoint.json"},
	"audit prune": {"gateway audit prune --before YYYY-MM-DD [--dir DIR]",
		"Delete audit entries older than the date; refused while any is within\nits retention (1 year; 3 years for core data and important data provided).",
		"gateway audit prune --before 2024-01-01 --dir /srv/gateway/data"},
	"audit check-export": {"gateway audit check-export --public-key FILE EXPORT",
		"Verify a signed audit export (JSON or CSV from GET /v1/audit/export)\nwith the gateway's public key alone.",
		"gateway audit check-export --public-key audit.pub export.json"},
	"node": {"gateway node --config FILE",
		"Serve a hospital's gateway and its federation endpoint (serve's YAML plus\na federation: block; see gateway.example.yaml).",
		"gateway node --config hospital-1.yaml"},
	"coordinator": {"gateway coordinator --config FILE",
		"Accept researchers' federated queries and combine the hospitals' shares.",
		"gateway coordinator --config coordinator.example.yaml"},
	"federation certs": {"gateway federation certs [--dir DIR] NAME...",
		"Issue a federation authority and mutual-TLS certificates for members.",
		"gateway federation certs --dir ./federation-certs coordinator hospital-1 hospital-2"},
	"federation demo": {"gateway federation demo [--dir DIR] [--nodes N] [--patients N] [--addr ADDR]",
		"Start synthetic hospitals, their federation endpoints and a coordinator\non loopback; tokens in DIR/federation-credentials.json.",
		"gateway federation demo --nodes 3"},
}

// helpShown is returned by parseFlags when the command's help was asked
// for: run prints it to stdout and succeeds.
type helpShown struct{ text string }

func (h helpShown) Error() string { return "help" }

// parseFlags parses args into fs. --help (or -h) returns helpShown with the
// command's usage, flags and example; a bad flag returns a usageError.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return helpShown{commandHelp(fs.Name(), fs)}
	}
	if err != nil {
		return usageError{fmt.Sprintf("%s: %v; see gateway %s --help", fs.Name(), err, fs.Name())}
	}
	return nil
}

// commandHelp is the help text of a command, with fs's flags when fs is
// not nil.
func commandHelp(name string, fs *flag.FlagSet) string {
	c := commands[name]
	var b bytes.Buffer
	fmt.Fprintf(&b, "Usage: %s\n\n%s\n", c.usage, c.about)
	if fs != nil {
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			b.WriteString("\nFlags:\n")
			fs.SetOutput(&b)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	fmt.Fprintf(&b, "\nExample:\n  %s\n", c.example)
	return b.String()
}

// groupHelp is the help of a command with subcommands (dataset, audit,
// catalog, federation): each subcommand's usage and first line.
func groupHelp(group string) string {
	var names []string
	for n := range commands {
		if strings.HasPrefix(n, group+" ") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b bytes.Buffer
	fmt.Fprintf(&b, "Usage: gateway %s SUBCOMMAND [flags]\n\nSubcommands:\n", group)
	for _, n := range names {
		about, _, _ := strings.Cut(commands[n].about, "\n")
		fmt.Fprintf(&b, "  %-20s %s\n", strings.TrimPrefix(n, group+" "), about)
	}
	fmt.Fprintf(&b, "\nEach takes --help, for its flags and an example:\n  gateway %s --help\n", names[0])
	return b.String()
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "help"
}
