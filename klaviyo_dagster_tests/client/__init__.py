"""Tests of the Klaviyo client and resource."""
