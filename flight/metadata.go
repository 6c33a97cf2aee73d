package flight

import (
	"context"
	"regexp"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql/schema_ref"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/policy"
)

// schemaName is the one schema of each dataset's catalog.
const schemaName = "main"

// tableType is the type of every table listed.
const tableType = "TABLE"

func (s *Server) registerSQLInfo() error {
	for id, v := range map[flightsql.SqlInfo]any{
		flightsql.SqlInfoFlightSqlServerName:        "gateway",
		flightsql.SqlInfoFlightSqlServerVersion:     s.cfg.Version,
		flightsql.SqlInfoFlightSqlServerReadOnly:    true,
		flightsql.SqlInfoFlightSqlServerSql:         true,
		flightsql.SqlInfoFlightSqlServerSubstrait:   false,
		flightsql.SqlInfoFlightSqlServerTransaction: int32(flightsql.SqlTransactionNone),
		flightsql.SqlInfoFlightSqlServerCancel:      false,
		flightsql.SqlInfoTransactionsSupported:      false,
		flightsql.SqlInfoDDLCatalog:                 false,
		flightsql.SqlInfoDDLSchema:                  false,
		flightsql.SqlInfoDDLTable:                   false,
		flightsql.SqlInfoIdentifierQuoteChar:        `"`,
		flightsql.SqlInfoIdentifierCase:             int32(flightsql.SqlCaseSensitivityCaseInsensitive),
		flightsql.SqlInfoQuotedIdentifierCase:       int32(flightsql.SqlCaseSensitivityCaseInsensitive),
		flightsql.SqlInfoCatalogTerm:                "dataset",
		flightsql.SqlInfoSchemaTerm:                 "schema",
	} {
		if err := s.RegisterSqlInfo(id, v); err != nil {
			return err
		}
	}
	return nil
}

// DoGetSqlInfo answers the server's fixed description; it names no
// dataset.
func (s *Server) DoGetSqlInfo(ctx context.Context, cmd flightsql.GetSqlInfo) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	s.read(ctx, "GetSqlInfo")
	return s.BaseServer.DoGetSqlInfo(ctx, cmd)
}

// visible is a dataset as a caller may list it: the tables of its policy,
// and the columns a query of theirs may name.
type visible struct {
	dataset catalog.Dataset
	// columns is the grants' column scope, lower case; nil is every column.
	columns map[string]bool
}

// scope is what the caller's live grants let them see, by dataset name.
func (s *Server) scope(ctx context.Context, p catalog.Person) ([]visible, error) {
	st := s.cfg.Store
	grants, err := st.Grants(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	now := st.Now()
	cols := map[string]map[string]bool{}
	all := map[string]bool{}
	for _, g := range grants {
		if !g.Live(now) {
			continue
		}
		for _, d := range g.Datasets {
			if len(g.Columns) == 0 {
				all[d] = true
			}
			if cols[d] == nil {
				cols[d] = map[string]bool{}
			}
			for _, c := range g.Columns {
				cols[d][strings.ToLower(c)] = true
			}
		}
	}
	names := make([]string, 0, len(cols))
	for d := range cols {
		names = append(names, d)
	}
	slices.Sort(names)
	out := make([]visible, 0, len(names))
	for _, name := range names {
		d, err := st.Dataset(ctx, name)
		if err != nil {
			return nil, err
		}
		v := visible{dataset: d, columns: cols[name]}
		if all[name] {
			v.columns = nil
		}
		out = append(out, v)
	}
	return out, nil
}

// allowed are the columns of t the caller may name: never identifiers,
// and within the grants' column scope (the privacy unit always is).
func (v visible) allowed(t policy.Table) []policy.Column {
	var out []policy.Column
	for _, c := range t.Columns {
		if c.Role == policy.Identifier {
			continue
		}
		if v.columns != nil && c.Role != policy.Unit && !v.columns[strings.ToLower(c.Name)] {
			continue
		}
		out = append(out, c)
	}
	return out
}

// read audits a catalog read, as the REST API audits its GETs.
func (s *Server) read(ctx context.Context, what string) {
	s.audit(ctx, callerOf(ctx), "read", "ok", map[string]any{"flight": what})
}

// listing is the FlightInfo of a catalog call: the ticket is the command.
func (s *Server) listing(schema *arrow.Schema, desc *flight.FlightDescriptor) *flight.FlightInfo {
	return &flight.FlightInfo{
		Endpoint:         []*flight.FlightEndpoint{{Ticket: &flight.Ticket{Ticket: desc.Cmd}}},
		FlightDescriptor: desc,
		Schema:           flight.SerializeSchema(schema, s.Alloc),
		TotalRecords:     -1,
		TotalBytes:       -1,
	}
}

// GetFlightInfoCatalogs lists the caller's datasets.
func (s *Server) GetFlightInfoCatalogs(ctx context.Context, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return s.listing(schema_ref.Catalogs, desc), nil
}

// DoGetCatalogs sends the datasets of the caller's live grants.
func (s *Server) DoGetCatalogs(ctx context.Context) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	vs, err := s.scope(ctx, callerOf(ctx).person)
	if err != nil {
		return nil, nil, s.fail(ctx, err)
	}
	s.read(ctx, "GetCatalogs")
	b := array.NewRecordBuilder(s.Alloc, schema_ref.Catalogs)
	defer b.Release()
	for _, v := range vs {
		b.Field(0).(*array.StringBuilder).Append(v.dataset.Name)
	}
	return schema_ref.Catalogs, chunks([]arrow.RecordBatch{b.NewRecordBatch()}), nil
}

// GetFlightInfoSchemas lists the schemas of the caller's datasets.
func (s *Server) GetFlightInfoSchemas(ctx context.Context, cmd flightsql.GetDBSchemas, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return s.listing(schema_ref.DBSchemas, desc), nil
}

// DoGetDBSchemas sends each visible dataset's one schema.
func (s *Server) DoGetDBSchemas(ctx context.Context, cmd flightsql.GetDBSchemas) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	vs, err := s.scope(ctx, callerOf(ctx).person)
	if err != nil {
		return nil, nil, s.fail(ctx, err)
	}
	s.read(ctx, "GetDbSchemas")
	b := array.NewRecordBuilder(s.Alloc, schema_ref.DBSchemas)
	defer b.Release()
	for _, v := range vs {
		if !catalogMatches(cmd.GetCatalog(), v.dataset.Name) || !like(cmd.GetDBSchemaFilterPattern(), schemaName) {
			continue
		}
		b.Field(0).(*array.StringBuilder).Append(v.dataset.Name)
		b.Field(1).(*array.StringBuilder).Append(schemaName)
	}
	return schema_ref.DBSchemas, chunks([]arrow.RecordBatch{b.NewRecordBatch()}), nil
}

// GetFlightInfoTables lists the tables of the caller's datasets.
func (s *Server) GetFlightInfoTables(ctx context.Context, cmd flightsql.GetTables, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	if cmd.GetIncludeSchema() {
		return s.listing(schema_ref.TablesWithIncludedSchema, desc), nil
	}
	return s.listing(schema_ref.Tables, desc), nil
}

// DoGetTables sends the tables of the visible datasets' policies, with,
// when asked, the schema of the columns the caller may name.
func (s *Server) DoGetTables(ctx context.Context, cmd flightsql.GetTables) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	vs, err := s.scope(ctx, callerOf(ctx).person)
	if err != nil {
		return nil, nil, s.fail(ctx, err)
	}
	s.read(ctx, "GetTables")
	schema := schema_ref.Tables
	if cmd.GetIncludeSchema() {
		schema = schema_ref.TablesWithIncludedSchema
	}
	b := array.NewRecordBuilder(s.Alloc, schema)
	defer b.Release()
	types := cmd.GetTableTypes()
	for _, v := range vs {
		if !catalogMatches(cmd.GetCatalog(), v.dataset.Name) || !like(cmd.GetDBSchemaFilterPattern(), schemaName) {
			continue
		}
		if len(types) > 0 && !slices.ContainsFunc(types, func(t string) bool { return strings.EqualFold(t, tableType) }) {
			continue
		}
		for _, t := range v.dataset.Policy.Tables {
			if !like(cmd.GetTableNameFilterPattern(), t.Name) {
				continue
			}
			b.Field(0).(*array.StringBuilder).Append(v.dataset.Name)
			b.Field(1).(*array.StringBuilder).Append(schemaName)
			b.Field(2).(*array.StringBuilder).Append(t.Name)
			b.Field(3).(*array.StringBuilder).Append(tableType)
			if cmd.GetIncludeSchema() {
				b.Field(4).(*array.BinaryBuilder).Append(flight.SerializeSchema(v.tableSchema(t), s.Alloc))
			}
		}
	}
	return schema, chunks([]arrow.RecordBatch{b.NewRecordBatch()}), nil
}

// tableSchema is the Arrow schema of the columns of t the caller may
// name, each with its DuckDB type and its role in the policy.
func (v visible) tableSchema(t policy.Table) *arrow.Schema {
	var fields []arrow.Field
	for _, c := range v.allowed(t) {
		md := flightsql.NewColumnMetadataBuilder().CatalogName(v.dataset.Name).SchemaName(schemaName).TableName(t.Name).
			TypeName(c.Type).IsReadOnly(true).Remarks("role: " + string(c.Role)).Metadata()
		fields = append(fields, arrow.Field{Name: c.Name, Type: arrowType(c.Type), Nullable: true, Metadata: md})
	}
	return arrow.NewSchema(fields, nil)
}

// GetFlightInfoTableTypes lists the one table type.
func (s *Server) GetFlightInfoTableTypes(ctx context.Context, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return s.listing(schema_ref.TableTypes, desc), nil
}

// DoGetTableTypes sends the one table type.
func (s *Server) DoGetTableTypes(ctx context.Context) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	b := array.NewRecordBuilder(s.Alloc, schema_ref.TableTypes)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append(tableType)
	return schema_ref.TableTypes, chunks([]arrow.RecordBatch{b.NewRecordBatch()}), nil
}

// catalogMatches applies a catalog filter: none matches every catalog, an
// empty one only tables without a catalog (there are none).
func catalogMatches(filter *string, name string) bool {
	return filter == nil || strings.EqualFold(*filter, name)
}

// like applies a Flight SQL filter pattern (SQL LIKE: % any run, _ any
// one character); none matches everything.
func like(pattern *string, s string) bool {
	if pattern == nil {
		return true
	}
	var re strings.Builder
	re.WriteString("(?is)^")
	for _, r := range *pattern {
		switch r {
		case '%':
			re.WriteString(".*")
		case '_':
			re.WriteString(".")
		default:
			re.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	re.WriteString("$")
	ok, err := regexp.MatchString(re.String(), s)
	return err == nil && ok
}
