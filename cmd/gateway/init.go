package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
)

// runInit creates an empty gateway: the metadata store, the keys in the key
// directory and the first admin and approver, whose one-time enrolment
// secrets it prints (see catalog/bootstrap.go for why both).
func runInit(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	fs := newFlags("init")
	var opts options
	dataFlags(fs, &opts)
	cfgPath := fs.String("config", "", "take dir, keys and metadata from this YAML configuration (the one serve will use)")
	org := fs.String("org", "hospital", "id of the hospital's organisation")
	orgName := fs.String("org-name", "", "the hospital's name (default: the id)")
	admin := fs.String("admin", "admin", "person id of the first admin")
	approver := fs.String("approver", "approver", "person id of the first approver")
	asJSON := fs.Bool("json", false, "print the secrets as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{"init takes no arguments; see gateway init --help"}
	}
	if *cfgPath != "" {
		c, _, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		opts = c
	}
	opts.defaults()
	if *orgName == "" {
		*orgName = *org
	}
	g, err := openGateway(ctx, opts, log)
	if err != nil {
		return err
	}
	defer g.Close()
	out, err := g.store.Bootstrap(ctx, catalog.Org{ID: *org, Name: *orgName, Kind: catalog.Internal},
		catalog.Founder{ID: *admin, Name: "First administrator"}, catalog.Founder{ID: *approver, Name: "First approver"},
		func(tx *sql.Tx, f catalog.Founders) error {
			for _, e := range []catalog.Enrolment{f.Admin, f.Approver} {
				b, _ := json.Marshal(map[string]any{"person": e.Person, "enrolment_id": e.ID, "needs_confirmation": false, "org": f.Org.ID})
				if _, err := g.audit.AppendTx(ctx, tx, audit.Entry{Actor: "installer", Action: "person.bootstrap", Outcome: "ok", Detail: b}); err != nil {
					return err
				}
			}
			return nil
		})
	if err != nil {
		return fmt.Errorf("initialise %s: %w", opts.Dir, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"dir": opts.Dir, "keys": opts.Keys, "metadata": opts.Metadata,
			"admin": out.Admin, "approver": out.Approver})
	}
	fmt.Fprintf(stdout, `gateway initialised
  data directory  %s
  metadata store  %s
  key directory   %s (keep it on other storage than the data, and a copy of audit.pub with the auditors)

One-time enrolment secrets, valid until %s. Hand each to its person only;
each redeems theirs once, for their own token, with
  curl -X POST http://ADDR/v1/enrol -d '{"secret": "SECRET"}'

  admin     %-10s %s
  approver  %-10s %s

The admin adds every other person (POST /v1/people); the approver confirms
each one who gets approval, audit or data access. Then start the gateway:
  gateway serve --config FILE
`, opts.Dir, opts.Metadata, opts.Keys, out.Admin.ExpiresAt.Format("2006-01-02 15:04 MST"),
		out.Admin.Person, out.Admin.Secret, out.Approver.Person, out.Approver.Secret)
	return nil
}
