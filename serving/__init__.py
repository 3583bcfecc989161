"""The read-only HTTP server: loops and routes from the warehouse, jobs for cold areas."""
