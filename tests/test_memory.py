import dataclasses

from screc.sim.memory import tier_timing


def test_a_drives_iops_limit_is_a_bandwidth_of_whole_accesses(demo_config):
    dev = demo_config.device
    ssd, dram = dev.tier("ssd"), dev.tier("dram")
    # 4 KiB pages: 12 B/cycle by bandwidth, 16.4 by 1 M reads/s: the bandwidth binds
    assert tier_timing(ssd, dev.clock_mhz) == {"LATENCY": 20000, "BW_X256": 3072,
                                               "ACCESS_BYTES": 4096}
    # 512 B reads: one per 250 cycles at 1 M reads/s, 2.05 B/cycle, under the 12 of bandwidth
    sectors = dataclasses.replace(ssd, access_bytes=512)
    assert tier_timing(sectors, dev.clock_mhz)["BW_X256"] == round(512 / 250 * 256)
    assert tier_timing(dataclasses.replace(sectors, iops=0.0), dev.clock_mhz)["BW_X256"] == 3072
    assert dram.iops == 0.0
    assert tier_timing(dram, dev.clock_mhz)["BW_X256"] == round(19.2e3 / 250 * 256)
