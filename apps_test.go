package weft_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestGRPCHealth runs a real gRPC server (the standard health service) on
// one node and calls it from another through the overlay.
func TestGRPCHealth(t *testing.T) {
	tn := newTestNet(t, "svc", "client")
	ln, err := tn.nodes["svc"].Listen("tcp", ":50051")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("weft.test", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()

	client := tn.nodes["client"]
	cc, err := grpc.NewClient("passthrough:///svc.weft.internal:50051",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return client.Dial(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "weft.test"})
	if err != nil {
		t.Fatalf("health check through the overlay: %v", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status = %v", resp.Status)
	}
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
	if err == nil {
		t.Fatal("unknown service reported healthy")
	}
}

// TestSSH runs an SSH server (golang.org/x/crypto/ssh) on one node that
// executes a command for a client on another node.
func TestSSH(t *testing.T) {
	tn := newTestNet(t, "box", "laptop")
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	clientPub, clientPriv, _ := ed25519.GenerateKey(rand.Reader)
	clientSigner, _ := ssh.NewSignerFromKey(clientPriv)
	sshClientPub, _ := ssh.NewPublicKey(clientPub)
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if string(k.Marshal()) == string(sshClientPub.Marshal()) {
				return nil, nil
			}
			return nil, fmt.Errorf("unknown key")
		},
	}
	cfg.AddHostKey(hostSigner)

	ln, err := tn.nodes["box"].Listen("tcp", ":22")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serveSSH(c, cfg)
			}()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := tn.nodes["laptop"].Dial(ctx, "tcp", "box:22")
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, "box:22", &ssh.ClientConfig{
		User:            "agent",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(clientSigner)},
		HostKeyCallback: ssh.FixedHostKey(hostSigner.PublicKey()),
		Timeout:         20 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh handshake through the overlay: %v", err)
	}
	client := ssh.NewClient(sc, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.Output("echo hello-overlay")
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if string(out) != "ran: echo hello-overlay\n" {
		t.Fatalf("output = %q", out)
	}
}

// serveSSH answers "exec" requests by echoing the command back, with exit
// status 0.
func serveSSH(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			return
		}
		for req := range chReqs {
			if req.Type != "exec" || len(req.Payload) < 4 {
				req.Reply(false, nil)
				continue
			}
			n := binary.BigEndian.Uint32(req.Payload)
			cmd := string(req.Payload[4:][:min(int(n), len(req.Payload)-4)])
			req.Reply(true, nil)
			fmt.Fprintf(ch, "ran: %s\n", cmd)
			ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, 0))
			ch.Close()
			break
		}
	}
}
