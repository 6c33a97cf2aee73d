package flight_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowflight "github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/flight"
)

// gateway is an in-process gateway with Flight SQL on a loopback port.
type gateway struct {
	env    *apitest.Env
	client *flightsql.Client
}

func start(t *testing.T) *gateway {
	t.Helper()
	env := apitest.New(t, apitest.Options{})
	srv, err := flight.New(flight.Config{Store: env.Store, Release: env.Release, Audit: env.Audit, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := srv.GRPC()
	done := make(chan error, 1)
	go func() { done <- g.Serve(ln) }()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	client, err := flightsql.NewClient(ln.Addr().String(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return &gateway{env: env, client: client}
}

// as is a context whose calls carry person's token (or person itself as
// the token when it is none of the demo people's), and the extra metadata
// pairs kv.
func (g *gateway) as(person string, kv ...string) context.Context {
	tok, ok := g.env.Tokens[person]
	if !ok {
		tok = person
	}
	return metadata.AppendToOutgoingContext(context.Background(), append([]string{"authorization", "Bearer " + tok}, kv...)...)
}

// fetch reads every record of the answer info points to.
func (g *gateway) fetch(t *testing.T, ctx context.Context, info *arrowflight.FlightInfo) (*arrow.Schema, [][]any) {
	t.Helper()
	r, err := g.client.DoGet(ctx, info.Endpoint[0].Ticket)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	var rows [][]any
	for r.Next() {
		rec := r.RecordBatch()
		for i := 0; i < int(rec.NumRows()); i++ {
			var row []any
			for _, col := range rec.Columns() {
				row = append(row, col.GetOneForMarshal(i))
			}
			rows = append(rows, row)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return r.Schema(), rows
}

func (g *gateway) spent(t *testing.T, person string) float64 {
	t.Helper()
	p, _, err := g.env.Store.AuthenticateToken(context.Background(), g.env.Tokens[person])
	if err != nil {
		t.Fatal(err)
	}
	grants, err := g.env.Store.Grants(context.Background(), p.ID)
	if err != nil || len(grants) != 1 {
		t.Fatalf("grants of %s: %v %v", person, grants, err)
	}
	return grants[0].EpsilonSpent
}

// refused checks that err is a gRPC status with code c whose message
// starts with the stable code.
func refused(t *testing.T, err error, c codes.Code, code string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != c || !strings.HasPrefix(st.Message(), code+": ") {
		t.Fatalf("got %v; want %s with a message starting %q", err, c, code+": ")
	}
}

func TestQuery(t *testing.T) {
	g := start(t)
	ctx := g.as("researcher_internal", "gateway-epsilon", "0.2")
	info, err := g.client.Execute(ctx, "SELECT sex, count(*) AS n FROM patients GROUP BY sex ORDER BY sex")
	if err != nil {
		t.Fatal(err)
	}
	if got := g.spent(t, "researcher_internal"); got != 0.2 {
		t.Fatalf("after GetFlightInfo spent %g; want 0.2", got)
	}
	schema, rows := g.fetch(t, ctx, info)
	if len(rows) != 2 || rows[0][0] != "F" || rows[1][0] != "M" {
		t.Fatalf("rows %v; want F and M", rows)
	}
	if schema.Field(0).Type.ID() != arrow.STRING || schema.Field(1).Type.ID() != arrow.INT64 {
		t.Errorf("schema %v; want utf8 and int64", schema)
	}
	if n, _ := rows[0][1].(int64); n < 500 {
		t.Errorf("count of F is %v; want about 1000", rows[0][1])
	}
	md := schema.Metadata()
	var report struct {
		Mechanism string  `json:"mechanism"`
		Epsilon   float64 `json:"epsilon"`
	}
	i := md.FindKey(flight.MetaPrivacy)
	if i < 0 || json.Unmarshal([]byte(md.Values()[i]), &report) != nil || report.Epsilon != 0.2 || report.Mechanism == "" {
		t.Errorf("privacy metadata %v; want the report with epsilon 0.2", md)
	}
	if got := g.spent(t, "researcher_internal"); got != 0.2 {
		t.Errorf("after DoGet spent %g; want 0.2 (the release runs once)", got)
	}
	// The ticket is redeemed once, and only by the person who asked.
	refused(t, g.fetchErr(ctx, info), codes.NotFound, "not_found")

	info, err = g.client.Execute(ctx, "SELECT count(*) AS n FROM encounters")
	if err != nil {
		t.Fatal(err)
	}
	refused(t, g.fetchErr(g.as("researcher"), info), codes.NotFound, "not_found")
	if _, rows := g.fetch(t, ctx, info); len(rows) != 1 {
		t.Errorf("rows %v; want one", rows)
	}
}

// fetchErr is the error of fetching info, nil when it is answered.
func (g *gateway) fetchErr(ctx context.Context, info *arrowflight.FlightInfo) error {
	r, err := g.client.DoGet(ctx, info.Endpoint[0].Ticket)
	if err != nil {
		return err
	}
	defer r.Release()
	for r.Next() {
	}
	return r.Err()
}

func TestPreparedStatement(t *testing.T) {
	g := start(t)
	ctx := g.as("researcher_internal")
	stmt, err := g.client.Prepare(ctx, "SELECT sex, count(*) AS n FROM patients GROUP BY sex")
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close(ctx)
	info, err := stmt.Execute(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, rows := g.fetch(t, ctx, info); len(rows) == 0 {
		t.Error("no rows")
	}
}

func TestRefusals(t *testing.T) {
	g := start(t)
	cases := []struct {
		name, person, sql string
		code              codes.Code
		stable            string
	}{
		{"identifier", "researcher_internal", "SELECT name, count(*) AS n FROM patients GROUP BY name", codes.InvalidArgument, "query_rejected"},
		{"not sql", "researcher_internal", "SELEKT 1", codes.InvalidArgument, "query_rejected"},
		{"over budget", "researcher_internal", "SELECT count(*) AS n FROM patients", codes.PermissionDenied, "budget_exhausted"},
		{"overseas", "researcher_overseas", "SELECT count(*) AS n FROM patients", codes.PermissionDenied, "forbidden"},
		{"not a researcher", "auditor", "SELECT count(*) AS n FROM patients", codes.PermissionDenied, "forbidden"},
		{"unknown token", "not-a-token", "SELECT count(*) AS n FROM patients", codes.Unauthenticated, "unauthenticated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := g.as(c.person)
			if c.stable == "budget_exhausted" {
				// 1 + 0.9 + 0.8 of the grant's 3 is spent; 0.5 more is over.
				for _, eps := range []string{"1", "0.9", "0.8"} {
					if _, err := g.client.Execute(g.as(c.person, "gateway-epsilon", eps), "SELECT age, count(*) AS n FROM patients GROUP BY age"); err != nil {
						t.Fatal(err)
					}
				}
				ctx = g.as(c.person, "gateway-epsilon", "0.5")
			}
			_, err := g.client.Execute(ctx, c.sql)
			refused(t, err, c.code, c.stable)
		})
	}
	t.Run("no token", func(t *testing.T) {
		_, err := g.client.GetCatalogs(context.Background())
		refused(t, err, codes.Unauthenticated, "unauthenticated")
	})
}

func TestCatalog(t *testing.T) {
	g := start(t)
	ctx := g.as("researcher")
	info, err := g.client.GetCatalogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, rows := g.fetch(t, ctx, info); len(rows) != 1 || rows[0][0] != "demo_hospital" {
		t.Errorf("catalogs %v; want demo_hospital", rows)
	}
	info, err = g.client.GetDBSchemas(ctx, &flightsql.GetDBSchemasOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if _, rows := g.fetch(t, ctx, info); len(rows) != 1 || rows[0][1] != "main" {
		t.Errorf("schemas %v; want demo_hospital.main", rows)
	}

	tables := func(person string, opts *flightsql.GetTablesOpts) map[string]*arrow.Schema {
		t.Helper()
		ctx := g.as(person)
		info, err := g.client.GetTables(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		r, err := g.client.DoGet(ctx, info.Endpoint[0].Ticket)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Release()
		out := map[string]*arrow.Schema{}
		for r.Next() {
			rec := r.RecordBatch()
			for i := 0; i < int(rec.NumRows()); i++ {
				name := rec.Column(0).(*array.String).Value(i) + "." + rec.Column(1).(*array.String).Value(i) + "." + rec.Column(2).(*array.String).Value(i)
				out[name] = nil
				if opts.IncludeSchema {
					s, err := arrowflight.DeserializeSchema(rec.Column(4).(*array.Binary).Value(i), nil)
					if err != nil {
						t.Fatal(err)
					}
					out[name] = s
				}
			}
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	got := tables("researcher", &flightsql.GetTablesOpts{IncludeSchema: true})
	if len(got) != 2 || got["demo_hospital.main.patients"] == nil || got["demo_hospital.main.encounters"] == nil {
		t.Fatalf("tables %v; want patients and encounters", got)
	}
	for table, s := range got {
		for _, f := range s.Fields() {
			switch f.Name {
			case "name", "national_id", "phone", "encounter_id":
				t.Errorf("%s lists identifier column %s", table, f.Name)
			}
		}
	}
	if _, ok := got["demo_hospital.main.patients"].FieldsByName("age"); !ok {
		t.Errorf("patients %v lacks age", got["demo_hospital.main.patients"])
	}
	pattern := "enc%"
	if got := tables("researcher", &flightsql.GetTablesOpts{TableNameFilterPattern: &pattern}); len(got) != 1 {
		t.Errorf("tables like enc%%: %v; want encounters", got)
	}
	// Without a grant there is nothing to list.
	if got := tables("auditor", &flightsql.GetTablesOpts{IncludeSchema: true}); len(got) != 0 {
		t.Errorf("the auditor, who holds no grant, sees tables %v", got)
	}

	info, err = g.client.GetSqlInfo(ctx, []flightsql.SqlInfo{flightsql.SqlInfoFlightSqlServerName, flightsql.SqlInfoFlightSqlServerReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	if _, rows := g.fetch(t, ctx, info); len(rows) != 2 {
		t.Errorf("sql info %v; want two rows", rows)
	}
}
