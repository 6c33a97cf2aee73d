package flight

import (
	"context"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"google.golang.org/grpc/metadata"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/release"
)

// pendingAnswer is a released answer waiting for its DoGet.
type pendingAnswer struct {
	res    *release.Result
	schema *arrow.Schema
}

// GetFlightInfoStatement releases the answer to a query and returns the
// ticket to fetch it with (see the package comment).
func (s *Server) GetFlightInfoStatement(ctx context.Context, q flightsql.StatementQuery, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	if len(q.GetTransactionId()) > 0 {
		return nil, s.fail(ctx, noTransactions())
	}
	return s.ask(ctx, q.GetQuery(), desc)
}

// CreatePreparedStatement keeps the query under a handle; nothing is
// analysed or run until the statement is executed. Parameters are not
// supported.
func (s *Server) CreatePreparedStatement(ctx context.Context, req flightsql.ActionCreatePreparedStatementRequest) (flightsql.ActionCreatePreparedStatementResult, error) {
	c := callerOf(ctx)
	var res flightsql.ActionCreatePreparedStatementResult
	if len(req.GetTransactionId()) > 0 {
		return res, s.fail(ctx, noTransactions())
	}
	if err := s.requireResearcher(ctx, c, "CreatePreparedStatement"); err != nil {
		return res, err
	}
	if err := s.prepared.reserve(); err != nil {
		return res, s.fail(ctx, err)
	}
	id, err := s.prepared.put(c.person.ID, req.GetQuery())
	if err != nil {
		return res, s.fail(ctx, err)
	}
	res.Handle = []byte(id)
	return res, nil
}

// ClosePreparedStatement forgets a prepared statement.
func (s *Server) ClosePreparedStatement(ctx context.Context, req flightsql.ActionClosePreparedStatementRequest) error {
	s.prepared.drop(callerOf(ctx).person.ID, string(req.GetPreparedStatementHandle()))
	return nil
}

// GetFlightInfoPreparedStatement executes a prepared statement: a release,
// as GetFlightInfoStatement.
func (s *Server) GetFlightInfoPreparedStatement(ctx context.Context, q flightsql.PreparedStatementQuery, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	sqlText, ok := s.prepared.get(callerOf(ctx).person.ID, string(q.GetPreparedStatementHandle()), false)
	if !ok {
		return nil, s.fail(ctx, fault.E(fault.NotFound, "the prepared statement is unknown, closed or expired; prepare it again"))
	}
	return s.ask(ctx, sqlText, desc)
}

// ask runs the one release of a question, through release.Service.Answer
// as the REST API does, and keeps the answer for its DoGet.
func (s *Server) ask(ctx context.Context, sqlText string, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	c := callerOf(ctx)
	if err := s.requireResearcher(ctx, c, "query"); err != nil {
		return nil, err
	}
	req, err := request(ctx, sqlText)
	if err != nil {
		s.audit(ctx, c, "query", fault.KindOf(err).Code(), map[string]any{"message": fault.Message(err)})
		return nil, s.fail(ctx, err)
	}
	req.TokenID = c.tokenID
	// Room for the answer is made before the release, so that a full
	// server refuses before any budget is spent.
	if err := s.answers.reserve(); err != nil {
		return nil, s.fail(ctx, err)
	}
	res, err := s.cfg.Release.Answer(ctx, c.person, req)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	schema, err := schemaOf(res)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	a, err := res.Answer()
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	id, err := s.answers.put(c.person.ID, pendingAnswer{res: res, schema: schema})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	ticket, err := flightsql.CreateStatementQueryTicket([]byte(id))
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return &flight.FlightInfo{
		Schema:           flight.SerializeSchema(schema, s.Alloc),
		FlightDescriptor: desc,
		Endpoint:         []*flight.FlightEndpoint{{Ticket: &flight.Ticket{Ticket: ticket}}},
		TotalRecords:     int64(len(a.Rows)),
		TotalBytes:       -1,
	}, nil
}

// DoGetStatement sends the answer a ticket holds, once, to the person who
// asked.
func (s *Server) DoGetStatement(ctx context.Context, t flightsql.StatementQueryTicket) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	p, ok := s.answers.get(callerOf(ctx).person.ID, string(t.GetStatementHandle()), true)
	if !ok {
		return nil, nil, s.fail(ctx, fault.E(fault.NotFound, "the ticket is unknown, expired or already fetched; ask the question again: a repeat is answered at no cost"))
	}
	a, err := p.res.Answer()
	if err != nil {
		return nil, nil, s.fail(ctx, err)
	}
	recs, err := records(s.Alloc, p.schema, a.Rows)
	if err != nil {
		return nil, nil, s.fail(ctx, err)
	}
	return p.schema, chunks(recs), nil
}

// chunks is a closed channel holding recs, which the Flight SQL server
// releases once written.
func chunks(recs []arrow.RecordBatch) <-chan flight.StreamChunk {
	ch := make(chan flight.StreamChunk, len(recs))
	for _, r := range recs {
		ch <- flight.StreamChunk{Data: r}
	}
	close(ch)
	return ch
}

// request is the question with what the call's metadata adds to it: the
// epsilon to spend and the grant to spend it on.
func request(ctx context.Context, sqlText string) (release.Request, error) {
	req := release.Request{SQL: sqlText}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("gateway-epsilon"); len(v) > 0 {
		eps, err := strconv.ParseFloat(strings.TrimSpace(v[0]), 64)
		if err != nil {
			return req, fault.E(fault.Invalid, "gateway-epsilon must be a number such as 0.1, not %.40q", v[0])
		}
		req.Epsilon = &eps
	}
	if v := md.Get("gateway-grant-id"); len(v) > 0 {
		req.GrantID = strings.TrimSpace(v[0])
	}
	return req, nil
}

func noTransactions() error {
	return fault.E(fault.Invalid, "the gateway has no transactions; send the query without one")
}
