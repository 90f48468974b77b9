// SPDX-License-Identifier: Apache-2.0

// Command echo answers on one TCP and one UDP port (both $PORT, default 8080) with exactly
// the bytes it received: the smallest backend that proves a packet reached a pod and came
// back, for the local cluster's smoke test and for L4 traffic tests.
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
	tcp, err := net.Listen("tcp", ":"+port)
	if err != nil {
		log.Fatalf("echo: listen on TCP port %s: %v (set PORT to a free port)", port, err)
	}
	udp, err := net.ListenPacket("udp", ":"+port)
	if err != nil {
		log.Fatalf("echo: listen on UDP port %s: %v (set PORT to a free port)", port, err)
	}
	log.Printf("echo: serving TCP and UDP on port %s", port)
	go serveUDP(udp)
	for {
		conn, err := tcp.Accept()
		if err != nil {
			log.Fatalf("echo: accept: %v", err)
		}
		go func() {
			defer conn.Close()
			_, _ = io.Copy(conn, conn)
		}()
	}
}

func serveUDP(conn net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			log.Fatalf("echo: UDP read: %v", err)
		}
		_, _ = conn.WriteTo(buf[:n], peer)
	}
}
