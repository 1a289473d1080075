package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pgcaravan/pgcaravan/coordinator"
	"github.com/pgcaravan/pgcaravan/coordinator/precheck"
	"github.com/pgcaravan/pgcaravan/coordinator/rpcserver"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/report"
	"github.com/pgcaravan/pgcaravan/shared/rpcsec"
)

// runPrecheck checks source and target (itself, or through a running
// coordinator's AdminService/Precheck) and fails when a check does.
func runPrecheck(ctx context.Context, args []string) error {
	var c common
	var addr string
	var asJSON bool
	var sec rpcsec.Config
	cfg := precheck.DefaultConfig()
	rate := int(cfg.CopyRate >> 20)
	fs := flag.NewFlagSet("precheck", flag.ContinueOnError)
	c.register(fs)
	fs.StringVar(&addr, "coordinator", "", "ask the running coordinator at ADDR to check its own source and target (instead of --source/--target)")
	securityFlags(fs, &sec, "client")
	fs.BoolVar(&asJSON, "json", false, "print the AdminService/Precheck response as JSON")
	fs.BoolVar(&cfg.Follow, "follow", false, "also check what a live migration (--follow) needs")
	fs.BoolVar(&cfg.ReplicaIdentityFull, "replica-identity-full", false, "the migration will run with --replica-identity-full")
	fs.BoolVar(&cfg.NoOwner, "no-owner", false, "the migration will run with --no-owner")
	fs.BoolVar(&cfg.NoACL, "no-acl", false, "the migration will run with --no-acl")
	fs.BoolVar(&cfg.Roles, "roles", false, "the migration will run with --roles (missing roles are then made from the source's)")
	fs.BoolVar(&cfg.DropIfExists, "drop-if-exists", false, "the migration will run with --drop-if-exists")
	fs.DurationVar(&cfg.LongTransaction, "long-transaction", cfg.LongTransaction, "report source transactions open longer than this")
	fs.DurationVar(&cfg.WALSample, "wal-sample", cfg.WALSample, "how long to sample the source's WAL write rate")
	fs.IntVar(&rate, "assumed-copy-rate", rate, "copy throughput in MiB/s the forecast assumes")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg.CopyRate = int64(rate) << 20
	var resp *pb.PrecheckResponse
	if addr != "" {
		admin, closeConn, err := adminClient(addr, sec)
		if err != nil {
			return err
		}
		defer closeConn()
		cctx, cancel := context.WithTimeout(ctx, cfg.WALSample+2*time.Minute)
		defer cancel()
		resp, err = admin.Precheck(cctx, &pb.PrecheckRequest{Follow: cfg.Follow,
			WalSample: durationpb.New(cfg.WALSample), LongTransaction: durationpb.New(cfg.LongTransaction)})
		if err != nil {
			return fmt.Errorf("coordinator %s: %w", addr, err)
		}
	} else {
		cfg.SourceURI, cfg.TargetURI = c.source, c.target
		rep, err := coordinator.Precheck(ctx, cfg, c.logger("precheck", os.Stderr))
		if err != nil {
			return err
		}
		resp = rpcserver.PrecheckToProto(rep)
	}
	if asJSON {
		out, err := protojson.MarshalOptions{Multiline: true}.Marshal(resp)
		if err != nil {
			return err
		}
		fmt.Println(string(out))
	} else {
		report.Precheck(os.Stdout, resp)
	}
	if resp.GetFailed() {
		n := 0
		for _, ch := range resp.GetChecks() {
			if ch.GetLevel() == pb.CheckLevel_CHECK_LEVEL_FAIL {
				n++
			}
		}
		return fmt.Errorf("%d check(s) failed: fix each FAIL above before starting the migration", n)
	}
	return nil
}
