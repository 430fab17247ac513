"""Field layout of the packed state and road arrays (the one place indices are defined).

The simulator state is struct-of-arrays, packed by type so that kernels receive a handful of arrays
instead of dozens (Numba flattens every array of a tuple argument into scalar arguments on each call):

* ``f``  (B, NF, N) float64: per-vehicle floats, ``f[:, X, :]`` is x of every vehicle of every world;
* ``iv`` (B, NI, N) int64: per-vehicle integers (-1 = none);
* ``m``  (B, NM, N) bool: per-vehicle flags;
* ``route`` (B, N, R) int64, ``wi`` (B, NW) int64 per-world integers, ``profile`` (B, P) float64.

``SimState`` exposes every field by name as a (B, N) view, e.g. ``state.speed``.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------- per-vehicle floats
FLOAT_FIELDS = (
    "x",  # centre [m]
    "y",  # centre [m]
    "yaw",  # heading [rad, CCW from +x]
    "speed",  # [m/s]
    "accel",  # realised acceleration of the last step [m/s^2]
    "steer",  # steering angle applied in the last step [rad]
    "length",  # [m]
    "width",  # [m]
    "s",  # arc length along the current lane [m]
    "d",  # lateral offset from the lane centre, left positive [m]
    "v0",  # IDM desired speed [m/s]
    "time_gap",  # IDM T [s]
    "s0",  # IDM jam distance [m]
    "a_comf",  # IDM maximum acceleration a [m/s^2]
    "b_comf",  # IDM comfortable deceleration b [m/s^2] (positive)
    "delta",  # IDM exponent
    "coolness",  # Enhanced IDM coolness c (Kesting et al. 2010); 0 = plain IDM (highway-env)
    "noise",  # acceleration noise std [m/s^2]
    "politeness",  # MOBIL p
    "lc_gain",  # MOBIL minimum acceleration gain [m/s^2]
    "lc_brake",  # MOBIL maximum braking imposed [m/s^2] (positive)
    "lc_timer",  # time to the next MOBIL decision [s] (-inf: lane changes off)
    "lc_force_time",  # episode time of a scripted lane change [s] (-1: none)
    "target_speed",  # speed target of CONSTANT_SPEED / META vehicles [m/s]
    "cc_gap",  # ACC/CACC time gap h [s]
    "cc_standstill",  # ACC/CACC standstill distance r [m]
    "cc_kp",  # CACC gain on the spacing error
    "cc_kd",  # CACC gain on its rate
    "cc_lag",  # ACC/CACC actuator lag tau [s] (0: none)
    "cc_cmd",  # CACC controller state u (desired acceleration) [m/s^2]
    "cc_pred_accel",  # predecessor's command as last received over V2V [m/s^2]
    "gap",  # bumper-to-bumper gap to the leader [m] (inf: none)
    "ttc",  # time to collision with the leader [s] (inf: not closing)
    "headway",  # gap / speed [s] (inf: no leader or stopped)
)
X, Y, YAW, SPEED, ACCEL, STEER, LENGTH, WIDTH, S, D, V0, TIME_GAP, S0, A_COMF, B_COMF, DELTA, COOLNESS, \
    NOISE, POLITENESS, LC_GAIN, LC_BRAKE, LC_TIMER, LC_FORCE_TIME, TARGET_SPEED, CC_GAP, CC_STANDSTILL, CC_KP, \
    CC_KD, CC_LAG, CC_CMD, CC_PRED_ACCEL, GAP, TTC, HEADWAY = range(34)
NF = len(FLOAT_FIELDS)

# ----------------------------------------------------------------------------------- per-vehicle integers
INT_FIELDS = (
    "lane",  # current lane (-1: none)
    "target_lane",  # lane the lateral controller tracks
    "route_pos",  # next route entry to use
    "behavior",  # Behavior code
    "vid",  # vehicle id, unique within an episode (-1: empty slot)
    "lc_force_dir",  # scripted lane change direction (+1 left, -1 right)
    "leader",  # slot of the vehicle ahead in lane (-1: none)
)
LANE, TARGET_LANE, ROUTE_POS, BEHAVIOR, VID, LC_FORCE_DIR, LEADER = range(7)
NI = len(INT_FIELDS)

# -------------------------------------------------------------------------------------- per-vehicle flags
FLAG_FIELDS = (
    "valid",  # the slot holds a vehicle
    "controlled",  # the vehicle is an agent
    "collided",  # has collided (sticky; a crashed vehicle brakes to a stop)
    "offroad",  # a box corner is outside the drivable area (this step)
)
VALID, CONTROLLED, COLLIDED, OFFROAD = range(4)
NM = len(FLAG_FIELDS)

# ------------------------------------------------------------------------------------- per-world integers
WORLD_FIELDS = ("step", "next_vid")
STEP, NEXT_VID = range(2)
NW = len(WORLD_FIELDS)

# ------------------------------------------------------------------------------------------------- road
# lane_f (L, 4) float64
L_LEN, L_DS, L_WIDTH, L_SPEED = range(4)
# lane_i (L + 1, 10) int64; row L holds the end offsets of the CSR columns
L_PT, L_LEFT, L_RIGHT, L_LC_LEFT, L_LC_RIGHT, L_PRIORITY, L_EXIT, L_SUCC, L_PRED, L_CONF = range(10)
# pts (P, 4) float64
P_X, P_Y, P_S, P_H = range(4)
# conf_f (C, 4) float64
C_S, C_S_OTHER, C_HALF, C_HALF_OTHER = range(4)
# conf_i (C, 3) int64
C_OTHER, C_KIND, C_YIELD = range(3)
# sdf_meta (3,) float64
SDF_X0, SDF_Y0, SDF_RES = range(3)

# ---------------------------------------------------------------------------------------- log fields
LOG_FLOATS = ("x", "y", "yaw", "speed", "accel", "steer", "length", "width", "gap", "ttc")
LOG_INTS = ("lane", "vid", "behavior", "leader")
LOG_FLAGS = ("valid", "controlled", "collided", "offroad")
LOG_FIELDS = LOG_FLOATS + LOG_INTS + LOG_FLAGS
