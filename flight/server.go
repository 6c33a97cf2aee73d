package flight

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/release"
)

// Config wires the Flight SQL server to the rest of the gateway.
type Config struct {
	Store   *catalog.Store
	Release *release.Service
	// Audit, when set, records refused credentials and catalog reads, as
	// the REST API does; releases audit themselves.
	Audit *audit.Log
	Log   *slog.Logger
	// Version is the gateway's version, told to clients in GetSqlInfo.
	Version string
	// TicketTTL is how long an answer waits for its DoGet, and MaxPending
	// how many answers (and, apart, prepared statements) may wait at once.
	// Defaults 5 minutes and 1024.
	TicketTTL  time.Duration
	MaxPending int
}

// Server is the Flight SQL service. Build it with New and serve it with
// the grpc.Server that GRPC returns.
type Server struct {
	flightsql.BaseServer
	cfg      Config
	answers  *handles[pendingAnswer]
	prepared *handles[string]
}

// New builds the service.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.TicketTTL <= 0 {
		cfg.TicketTTL = 5 * time.Minute
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	s := &Server{
		cfg:      cfg,
		answers:  newHandles[pendingAnswer]("answers are waiting to be fetched", cfg.MaxPending, cfg.TicketTTL),
		prepared: newHandles[string]("prepared statements are open", cfg.MaxPending, time.Hour),
	}
	s.Alloc = memory.DefaultAllocator
	if err := s.registerSQLInfo(); err != nil {
		return nil, err
	}
	return s, nil
}

// GRPC is a gRPC server with the Flight SQL service registered behind the
// bearer-token check. opts add to it (TLS credentials, say); the caller
// serves it and stops it.
func (s *Server) GRPC(opts ...grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.ChainUnaryInterceptor(s.unary), grpc.ChainStreamInterceptor(s.stream))
	g := grpc.NewServer(opts...)
	flight.RegisterFlightServiceServer(g, flightsql.NewFlightServerWithAllocator(s, s.Alloc))
	return g
}

// caller is who a call authenticated as.
type caller struct {
	person  catalog.Person
	tokenID string
}

type callerKey struct{}

func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	ctx, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return next(ctx, req)
}

func (s *Server) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	ctx, err := s.authenticate(ss.Context())
	if err != nil {
		return err
	}
	return next(srv, &authenticated{ServerStream: ss, ctx: ctx})
}

// authenticated is a stream whose context names its caller.
type authenticated struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authenticated) Context() context.Context { return a.ctx }

// authenticate checks the call's bearer token, as the REST API's
// middleware does, and returns a context that names the caller.
func (s *Server) authenticate(ctx context.Context) (context.Context, error) {
	token, err := bearer(ctx)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	p, tokenID, err := s.cfg.Store.AuthenticateToken(ctx, token)
	if err != nil {
		if tokenID != "" {
			// A known credential, refused (revoked, or its holder
			// deactivated): the refusal is recorded against them. Unknown
			// tokens are refused without an entry, so that nobody can fill
			// the audit log from outside.
			s.audit(ctx, caller{person: p, tokenID: tokenID}, "auth", fault.KindOf(err).Code(), map[string]any{"message": fault.Message(err)})
		}
		return nil, s.fail(ctx, err)
	}
	return context.WithValue(ctx, callerKey{}, caller{person: p, tokenID: tokenID}), nil
}

func bearer(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		scheme, token, ok := strings.Cut(strings.TrimSpace(v), " ")
		if ok && strings.EqualFold(scheme, "bearer") && strings.TrimSpace(token) != "" {
			return strings.TrimSpace(token), nil
		}
	}
	return "", fault.E(fault.Unauthenticated, "send the metadata \"authorization: Bearer TOKEN\" with every call")
}

// requireResearcher refuses, and audits the refusal, unless the caller
// may ask questions.
func (s *Server) requireResearcher(ctx context.Context, c caller, what string) error {
	if c.person.Has(catalog.Researcher) {
		return nil
	}
	err := fault.E(fault.Forbidden, "this call needs the role %s; you hold %v", catalog.Researcher, c.person.Roles)
	s.audit(ctx, c, "authorize", fault.KindOf(err).Code(), map[string]any{"flight": what, "message": fault.Message(err)})
	return s.fail(ctx, err)
}

// audit appends an entry naming the caller and the token; a failure is
// logged.
func (s *Server) audit(ctx context.Context, c caller, action, outcome string, detail map[string]any) {
	if s.cfg.Audit == nil {
		return
	}
	detail["protocol"] = "flight-sql"
	if c.tokenID != "" {
		detail["token_id"] = c.tokenID
	}
	b, err := json.Marshal(detail)
	if err != nil {
		s.cfg.Log.Error("encode audit detail", "action", action, "err", err)
		return
	}
	e := audit.Entry{Actor: c.person.ID, Role: roleText(c.person), Action: action, Outcome: outcome, Detail: b}
	if _, err := s.cfg.Audit.Append(context.WithoutCancel(ctx), e); err != nil {
		s.cfg.Log.Error("audit append failed", "action", action, "err", err)
	}
}

func roleText(p catalog.Person) string {
	var rs []string
	for _, r := range p.Roles {
		rs = append(rs, string(r))
	}
	return strings.Join(rs, ",")
}

// codes maps the gateway's error kinds to gRPC codes: the one table.
var grpcCodes = map[fault.Kind]codes.Code{
	fault.Internal:         codes.Internal,
	fault.Unauthenticated:  codes.Unauthenticated,
	fault.Forbidden:        codes.PermissionDenied,
	fault.Invalid:          codes.InvalidArgument,
	fault.QueryRejected:    codes.InvalidArgument,
	fault.BudgetExhausted:  codes.PermissionDenied,
	fault.QuotaExceeded:    codes.PermissionDenied,
	fault.Timeout:          codes.DeadlineExceeded,
	fault.ResourceLimit:    codes.ResourceExhausted,
	fault.NotFound:         codes.NotFound,
	fault.Conflict:         codes.FailedPrecondition,
	fault.TooLarge:         codes.ResourceExhausted,
	fault.Unavailable:      codes.Unavailable,
	fault.RateLimited:      codes.ResourceExhausted,
	fault.StoreUnavailable: codes.Unavailable,
	fault.TooManyQueries:   codes.ResourceExhausted,
}

// codeOf is the gRPC code of an error of kind k.
func codeOf(k fault.Kind) codes.Code {
	if c, ok := grpcCodes[k]; ok {
		return c
	}
	return codes.Internal
}

// fail turns err into a gRPC status whose message starts with the stable
// code; internal errors are logged and told in general terms only.
func (s *Server) fail(ctx context.Context, err error) error {
	k := fault.KindOf(err)
	if u := catalog.Unavailable(err); k == fault.Internal && u != nil {
		k, err = fault.StoreUnavailable, u
	}
	if k == fault.Internal || k == fault.StoreUnavailable {
		s.cfg.Log.Error("flight call failed", "person", callerOf(ctx).person.ID, "code", k.Code(), "err", err)
	}
	return status.Error(codeOf(k), k.Code()+": "+fault.Message(err))
}
