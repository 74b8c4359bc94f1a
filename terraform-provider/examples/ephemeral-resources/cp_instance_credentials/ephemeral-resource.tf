# Read at every run, never written to the plan or the state (Terraform >= 1.10, OpenTofu >= 1.11).
ephemeral "cp_instance_credentials" "orders" {
  instance_id = cp_instance.orders.id
}

# For example, configure a PostgreSQL provider with them:
# provider "postgresql" {
#   host     = cp_instance.orders.endpoint.host
#   port     = cp_instance.orders.endpoint.port
#   username = ephemeral.cp_instance_credentials.orders.username
#   password = ephemeral.cp_instance_credentials.orders.password
# }
