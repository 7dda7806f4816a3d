/* mp_watch.h - a watchdog thread: armed around every blocking collective of
 * a rank, it calls on_fire (abort the communicator) once the deadline
 * passes, so that a rank whose peer died or never came gets an error
 * instead of hanging inside NCCL. */
#ifndef JAXMG_MP_WATCH_H
#define JAXMG_MP_WATCH_H

#include <pthread.h>

typedef struct jmg_mp_watch {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  int running, stop;
  int armed, fired, firing;
  double deadline; /* jmg_clock_now() seconds */
  void (*on_fire)(void* arg);
  void* arg;
} jmg_mp_watch;

/* 0 on success. */
int jmg_mp_watch_start(jmg_mp_watch* w);
void jmg_mp_watch_stop(jmg_mp_watch* w);
/* Arms for timeout_s seconds; disarm returns 1 if the watchdog fired. */
void jmg_mp_watch_arm(jmg_mp_watch* w, double timeout_s, void (*on_fire)(void*), void* arg);
int jmg_mp_watch_disarm(jmg_mp_watch* w);

#endif
