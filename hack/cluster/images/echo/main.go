// SPDX-License-Identifier: Apache-2.0

// Command echo answers on one TCP and one UDP port (both $PORT, default 8080) with exactly
// the bytes it received: the smallest backend that proves a packet reached a pod and came
// back, for the local cluster's smoke test and for L4 traffic tests.
//
// With $ECHO_NAME set it also says who answered and whom it saw, so a client outside the
// cluster can tell which backend a load balancer picked and whether the client's own IP
// survived the trip: every TCP connection starts with the line "NAME PEER_IP:PORT\n" before
// the echo, and every UDP reply is that line followed by the datagram's bytes.
package main

import (
	"io"
	"log"
	"net"
	"os"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	name := os.Getenv("ECHO_NAME")
	tcp, err := net.Listen("tcp", ":"+port)
	if err != nil {
		log.Fatalf("echo: listen on TCP port %s: %v (set PORT to a free port)", port, err)
	}
	udp, err := net.ListenPacket("udp", ":"+port)
	if err != nil {
		log.Fatalf("echo: listen on UDP port %s: %v (set PORT to a free port)", port, err)
	}
	if name != "" {
		log.Printf("echo: serving TCP and UDP on port %s as %q (each answer starts with \"%s PEER\")", port, name, name)
	} else {
		log.Printf("echo: serving TCP and UDP on port %s", port)
	}
	go serveUDP(udp, name)
	for {
		conn, err := tcp.Accept()
		if err != nil {
			log.Fatalf("echo: accept: %v", err)
		}
		go func() {
			defer conn.Close()
			if name != "" {
				if _, err := io.WriteString(conn, identity(name, conn.RemoteAddr())); err != nil {
					return
				}
			}
			_, _ = io.Copy(conn, conn)
		}()
	}
}

// identity is the line an answer starts with when ECHO_NAME is set.
func identity(name string, peer net.Addr) string {
	return name + " " + peer.String() + "\n"
}

func serveUDP(conn net.PacketConn, name string) {
	buf := make([]byte, 65535)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			log.Fatalf("echo: UDP read: %v", err)
		}
		reply := buf[:n]
		if name != "" {
			reply = append([]byte(identity(name, peer)), reply...)
		}
		_, _ = conn.WriteTo(reply, peer)
	}
}
