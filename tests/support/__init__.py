"""What the test tiers and the benchmarks share: events as AWS delivers them, API Gateway in front of a
handler, moto's DynamoDB made to behave like DynamoDB.

Plain modules without pytest, so that `benchmarks/` can import them too (benchmarks depend on this
package, never the other way round). Each one builds on `devstack` where the local stack already has the
piece, so tests, benchmarks and the local stack share one implementation.
"""
