// A stand-in controller for csi-sanity runs against apiary's node plugin, which has no
// Controller service: its inline volumes are described in the pod spec and handed to the
// plugin by the kubelet. csi-sanity's node tests that publish a volume first ask a controller
// to create one and then publish it with the volume context the controller returned; this
// program plays that part, as the kubelet does for an inline volume: the volume's context is
// the parameters it was created with (--csi.testvolumeparameters). It serves the Identity
// service (csi-sanity checks every endpoint it is given) and CreateVolume, DeleteVolume and
// ControllerGetCapabilities. It is test infrastructure only; the test runs csi-sanity with
// --ginkgo.focus on the node plugin's services, so this program's answers are not what is
// being counted.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type server struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
}

func (server) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "inline-volumes.test.apiary.io", VendorVersion: "0"}, nil
}

func (server) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{
		Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{
			Type: csi.PluginCapability_Service_CONTROLLER_SERVICE,
		}},
	}}}, nil
}

func (server) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func (server) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{
			Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		}},
	}}}, nil
}

// CreateVolume names the volume after the request (kubelet derives an inline volume's id from
// the pod and volume names the same way) and passes the parameters on as its context.
func (server) CreateVolume(_ context.Context, r *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if r.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      "inline-" + r.GetName(),
		VolumeContext: r.GetParameters(),
	}}, nil
}

func (server) DeleteVolume(_ context.Context, r *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if r.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func main() {
	endpoint := flag.String("endpoint", "", "unix socket path to serve on")
	flag.Parse()
	path := strings.TrimPrefix(strings.TrimPrefix(*endpoint, "unix://"), "unix:")
	if path == "" {
		log.Fatal("--endpoint is required")
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	csi.RegisterIdentityServer(s, server{})
	csi.RegisterControllerServer(s, server{})
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
		s.Stop()
	}()
	if err := s.Serve(l); err != nil {
		log.Fatal(err)
	}
}
