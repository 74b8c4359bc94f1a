data "cp_instance" "orders" {
  name = "orders-db"
}

output "orders_endpoint" {
  value = data.cp_instance.orders.endpoint
}
