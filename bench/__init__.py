"""flygblad's benchmarks: each module measures one stage; timings live here, never in tests."""
