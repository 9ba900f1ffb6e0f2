package main

import (
	"github.com/spf13/cobra"
)

// newRootCommand builds the command tree. Every command returns its error;
// only main exits.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "switchboard",
		Short: "Production gRPC services in Go: the kit's reference system and its tools",
		Long: `switchboard runs the Switchboard reference system (an online shop built on
the kit: identity, inventory, payment, order, shipping, notify, audit and a
REST gateway) and the tools that go with it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newUpCommand(), newServeCommand(), newCertsCommand(), newDemoCommand(), newLoadCommand(), newVersionCommand(), newDevCommand())
	return root
}
