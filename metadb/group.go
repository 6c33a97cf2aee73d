package metadb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// committer is SQLite's group commit. SQLite has one writer, and with
// synchronous=FULL every commit waits for the disk; one fsync'd commit per
// transaction caps the gateway at what the disk syncs per second, whatever
// the cores. So one goroutine owns the writing connection, and takes the
// transactions callers hand to Tx in batches: every transaction waiting
// when the previous batch's commit returns joins the next batch, which is
// one database transaction with a savepoint per caller's transaction, and
// one commit. A caller's transaction that fails is rolled back to its
// savepoint alone; the others commit. Tx returns only when its batch has
// committed, so what a caller does after Tx (answer, release) still
// follows its durable commit; a batch whose commit fails fails all of its
// transactions, and none is kept.
//
// No batch waits for company: a lone transaction commits at once, as it
// did before, and batches grow only while commits are in progress. Within
// a batch the transactions run one after another on one connection, each
// seeing the ones before it, as they would have in turn.
type committer struct {
	db    *sql.DB
	queue chan *pending // unbuffered: a request is either taken or refused
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once
	// commits counts the batches committed, for tests.
	commits atomic.Int64
}

// maxBatch bounds a batch, so that one commit never waits on an unbounded
// number of transactions.
const maxBatch = 64

// pending is one caller's transaction.
type pending struct {
	ctx context.Context
	fn  func(*sql.Tx) error
	// deferred: the caller need not wait for the disk (see TxDeferred).
	deferred bool
	err      error
	pan      any // a panic of fn, raised again in the caller
	done     chan struct{}
}

var errClosed = errors.New("the metadata store is closed")

func newCommitter(db *sql.DB) *committer {
	c := &committer{db: db, queue: make(chan *pending), quit: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// do runs fn in the next batch and returns when the batch has committed.
func (c *committer) do(ctx context.Context, fn func(*sql.Tx) error, deferred bool) error {
	p := &pending{ctx: ctx, fn: fn, deferred: deferred, done: make(chan struct{})}
	select {
	case c.queue <- p:
	case <-c.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once taken, the outcome is the batch's: wait for it even if ctx ends
	// (a transaction not yet begun when it does is skipped).
	<-p.done
	if p.pan != nil {
		panic(p.pan)
	}
	return p.err
}

// close stops the committer once the batch in progress has committed.
func (c *committer) close() {
	c.once.Do(func() { close(c.quit) })
	<-c.done
}

func (c *committer) run() {
	defer close(c.done)
	batch := make([]*pending, 0, maxBatch)
	for {
		select {
		case p := <-c.queue:
			batch = append(batch[:0], p)
		case <-c.quit:
			return
		}
	gather:
		for len(batch) < maxBatch {
			select {
			case p := <-c.queue:
				batch = append(batch, p)
			default:
				break gather
			}
		}
		c.commit(batch)
	}
}

// commit runs a batch in one transaction and tells every caller its
// outcome.
func (c *committer) commit(batch []*pending) {
	defer func() {
		for _, p := range batch {
			close(p.done)
		}
	}()
	live := make([]*pending, 0, len(batch))
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.err = err
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	fail := func(err error) {
		for _, p := range live {
			p.err = err
		}
	}
	ctx := context.Background()
	conn, err := c.db.Conn(ctx)
	if err != nil {
		fail(fmt.Errorf("connect: %w", err))
		return
	}
	defer conn.Close()
	deferred := true
	for _, p := range live {
		deferred = deferred && p.deferred
	}
	if deferred {
		// The connection's other users expect every commit synced:
		// put synchronous back to FULL however the batch ends.
		if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
			fail(fmt.Errorf("defer the sync: %w", err))
			return
		}
		defer func() {
			if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
				// Never leave the connection unsynced for others.
				conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("begin transaction: %w", err))
		return
	}
	if len(live) == 1 {
		p := live[0]
		if p.err = call(p, tx); p.err != nil {
			tx.Rollback()
			return
		}
		p.err = tx.Commit()
		c.commits.Add(1)
		return
	}
	var ok []*pending
	var lost error // the transaction itself failed: nothing in it is kept
	for _, p := range live {
		if lost != nil {
			p.err = lost
			continue
		}
		if _, err := tx.Exec("SAVEPOINT batch"); err != nil {
			lost = fmt.Errorf("batched transaction: %w", err)
			p.err = lost
			continue
		}
		if p.err = call(p, tx); p.err != nil {
			_, err := tx.Exec("ROLLBACK TO batch")
			if err == nil {
				_, err = tx.Exec("RELEASE batch")
			}
			if err != nil {
				lost = fmt.Errorf("batched transaction: %w", err)
			}
			continue
		}
		if _, err := tx.Exec("RELEASE batch"); err != nil {
			lost = fmt.Errorf("batched transaction: %w", err)
			p.err = lost
			continue
		}
		ok = append(ok, p)
	}
	if lost != nil || len(ok) == 0 {
		tx.Rollback()
		for _, p := range ok {
			p.err = lost
		}
		return
	}
	err = tx.Commit()
	c.commits.Add(1)
	for _, p := range ok {
		p.err = err
	}
}

// call runs p's transaction, turning a panic into an error here (so that
// the rest of the batch proceeds) and into the same panic in the caller.
func call(p *pending, tx *sql.Tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			p.pan = v
			err = fmt.Errorf("transaction panicked: %v", v)
		}
	}()
	return p.fn(tx)
}
