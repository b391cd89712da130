// ferry-vcsim: the lab's vCenter. Debian's govmomi simulator plus ferry's changed block tracking
// extension (ferry_cbt.go, compiled into package simulator), and the vAPI (REST) simulator for
// tags.
//
// It listens on loopback only, with a self-signed TLS certificate written to -cert-out so clients
// verify TLS against it. The password is read from a file (never argv). The listening URL (without
// credentials) is written to -url-file once the server accepts connections. SIGTERM stops it and
// removes the simulator's temporary datastore folders.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	// The vSphere Automation (REST) simulator: tagging (categories, tags, associations).
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	urlFile := flag.String("url-file", "", "write the SDK URL here when ready")
	certOut := flag.String("cert-out", "", "write the server's TLS certificate (PEM) here")
	user := flag.String("user", "administrator@vsphere.local", "login user")
	passwordFile := flag.String("password-file", "", "file holding the login password")
	disks := flag.String("disks", "", "directory of lab disk files and change journals")
	hosts := flag.Int("hosts", 2, "ESXi hosts in the cluster")
	datastores := flag.Int("datastores", 2, "datastores shared by the hosts")
	portgroups := flag.Int("portgroups", 2, "distributed portgroups")
	machines := flag.Int("machines", 0, "extra simulator VMs (VM0, VM1, ...) for scale tests")
	delay := flag.Int("delay-ms", 0, "delay every SOAP call (simulates a remote, loaded vCenter)")
	maxAreas := flag.Int("cbt-max-areas", 64, "QueryChangedDiskAreas: most areas per answer")
	esx := flag.Bool("esx", false, "simulate a standalone ESXi host instead of a vCenter")
	window := flag.Int64("cbt-window", 1<<30, "QueryChangedDiskAreas: most bytes of disk covered per answer")
	flag.Parse()

	if !strings.HasPrefix(*listen, "127.") && !strings.HasPrefix(*listen, "localhost:") {
		log.Fatalf("refusing to listen on %q: loopback only", *listen)
	}
	password, err := os.ReadFile(*passwordFile)
	if err != nil {
		log.Fatalf("password file: %v", err)
	}
	if *disks == "" {
		log.Fatalf("-disks is required")
	}
	model := simulator.VPX()
	model.Datacenter = 1
	model.Cluster = 1
	model.ClusterHost = *hosts
	model.Host = 0
	model.Machine = *machines
	model.Datastore = *datastores
	model.Portgroup = *portgroups
	if *esx { // a standalone ESXi host (ha-datacenter, no vCenter): for ESXi direct mode
		model = simulator.ESX()
	}
	model.DelayConfig.Delay = *delay
	if err := model.Create(); err != nil {
		log.Fatalf("model: %v", err)
	}
	simulator.FerryCBT.Configure(*disks, *maxAreas, *window)

	cert, err := selfSigned()
	if err != nil {
		log.Fatalf("certificate: %v", err)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	model.Service.Listen = &url.URL{
		Host: *listen,
		User: url.UserPassword(*user, strings.TrimSpace(string(password))),
	}
	model.Service.RegisterEndpoints = true // the vAPI (tagging) endpoints imported above
	server := model.Service.NewServer()

	if *certOut != "" {
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		must(os.WriteFile(*certOut, pemBytes, 0o644))
	}
	public := *server.URL
	public.User = nil
	if *urlFile != "" {
		must(writeAtomic(*urlFile, public.String()+"\n"))
	}
	fmt.Println(public.String())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	server.Close()
	model.Remove()
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ferry-lab-vcenter"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
